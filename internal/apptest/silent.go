package apptest

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"testing"
)

// SilentAfterAnswer starts a loopback HTTP server that answers the first
// request on each connection with answer (a whole HTTP/1.1 response), then
// closes its side of the connection and says nothing more, neither an
// answer nor a reset, as a stopped container's address does. It returns
// the address; everything is closed when the test ends.
func SilentAfterAnswer(t testing.TB, answer string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			go func() {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				_, _ = c.Write([]byte(answer))
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}
