// Command toyd is the smallest daemon on the shared runtime: it answers
// every TCP connection with its configured greeting. Tests use it to check
// the runtime itself (internal/apptest); it is not shipped.
package main

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/edgestack/edgestack/internal/app"
	"github.com/edgestack/edgestack/internal/config"
)

// Config is toyd's configuration.
type Config struct {
	app.Base `yaml:",inline"`
	// Listen is the TCP address to greet on. Default: 127.0.0.1:0.
	Listen string `yaml:"listen"`
	// Greeting is written to each connection. Default: "hello".
	Greeting string `yaml:"greeting"`
}

// Validate reports every problem.
func (c *Config) Validate() error {
	errs := []error{c.Base.Validate()}
	if c.Greeting == "" {
		errs = append(errs, config.Errorf("greeting", "must not be empty"))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, config.Errorf("listen", "%v", err))
	}
	return errors.Join(errs...)
}

type service struct {
	cfg      atomic.Pointer[Config]
	listen   string
	ln       net.Listener
	wg       sync.WaitGroup
	failures func(error)
}

func (s *service) Start(context.Context) error {
	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		return err
	}
	s.ln = ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					s.failures(err)
				}
				return
			}
			_, _ = c.Write([]byte(s.cfg.Load().Greeting + "\n"))
			_ = c.Close()
		}
	}()
	return nil
}

func (s *service) Reload(_ context.Context, cfg *Config) error {
	s.cfg.Store(cfg)
	return nil
}

func (s *service) Shutdown(context.Context) error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func main() {
	app.Main(app.Spec[*Config]{
		Info: app.Info{Name: "toyd", Version: "test"},
		Defaults: func() *Config {
			return &Config{Base: app.DefaultBase("127.0.0.1:9100"), Listen: "127.0.0.1:0", Greeting: "hello"}
		},
		New: func(deps app.Deps, cfg *Config) (app.Service[*Config], error) {
			s := &service{listen: cfg.Listen, failures: deps.Fail}
			s.cfg.Store(cfg)
			return s, nil
		},
	})
}
