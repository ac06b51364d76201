package apptest

import (
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
)

// FreePort returns a loopback port that is free now for both TCP and UDP,
// for a server the test starts later on a fixed address (a peer like NSD,
// or a listener that must keep its address across reloads). It is taken
// below the kernel's ephemeral range (32768 and up by default): a port
// from ":0" is in that range, where the outgoing connections of other
// tests can take it before the server binds it.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 200 {
		p := 20000 + rand.IntN(12000)
		addr := "127.0.0.1:" + strconv.Itoa(p)
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ul, err := net.ListenPacket("udp", addr)
		tl.Close()
		if err != nil {
			continue
		}
		ul.Close()
		return p
	}
	t.Fatal("apptest: no free port in 20000-31999")
	return 0
}
