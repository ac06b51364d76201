//go:build linux

// Command evloop is a measuring probe, not a product: the smallest HTTP/1.1
// keep-alive proxy an epoll event loop allows in Go (one loop per P on its
// own SO_REUSEPORT listener, pooled non-blocking target connections,
// round robin, no rules, no health, no limits, no timeouts). bench/lb runs
// it in lbd's place (`-lbd` takes any binary that understands
// `run -config FILE`) to measure what an event-loop engine would buy lbd
// over its goroutine-per-connection one: on 2026-11-27 it bought nothing
// (bench/lb/README.md).
package main

import (
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"
)

// config is the part of bench/peers/lb-lbd.yaml the probe reads: the
// listener named "http" and the first target group's targets.
type config struct {
	TargetGroups []struct {
		Targets []struct {
			Address string `yaml:"address"`
		} `yaml:"targets"`
	} `yaml:"target_groups"`
	Listeners []struct {
		Name   string `yaml:"name"`
		Listen string `yaml:"listen"`
	} `yaml:"listeners"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println("evloop (bench probe)")
		return
	}
	if len(os.Args) != 4 || os.Args[1] != "run" || os.Args[2] != "-config" {
		fmt.Fprintln(os.Stderr, "usage: evloop run -config FILE")
		os.Exit(2)
	}
	listen, targets, err := readConfig(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, "evloop:", err)
		os.Exit(1)
	}
	p, err := start(listen, targets)
	if err != nil {
		fmt.Fprintln(os.Stderr, "evloop:", err)
		os.Exit(1)
	}
	p.wait()
}

func readConfig(path string) (listen string, targets []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	var c config
	if err := yaml.Unmarshal(b, &c); err != nil {
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, l := range c.Listeners {
		if l.Name == "http" {
			listen = l.Listen
		}
	}
	if listen == "" || len(c.TargetGroups) == 0 || len(c.TargetGroups[0].Targets) == 0 {
		return "", nil, fmt.Errorf("%s: needs a listener named http and a target group with targets", path)
	}
	for _, t := range c.TargetGroups[0].Targets {
		targets = append(targets, t.Address)
	}
	return listen, targets, nil
}
