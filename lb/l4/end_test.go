package l4

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestEndOf(t *testing.T) {
	op := func(o string, err error) error {
		return &net.OpError{Op: o, Net: "tcp", Err: os.NewSyscallError(o, err)}
	}
	reset, pipe := op("readfrom", syscall.ECONNRESET), op("readfrom", syscall.EPIPE)
	deadline := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	closed := &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}
	type tc struct {
		name                              string
		err                               error
		fromClient, quitting, idleExpired bool
		want                              string
	}
	for _, c := range []tc{
		{"client resets", reset, true, false, false, ResultClientReset},
		{"target resets", reset, false, false, false, ResultTargetReset},
		{"write into a reset target", pipe, true, false, false, ResultTargetReset},
		{"write into a reset client", pipe, false, false, false, ResultClientReset},
		{"idle", deadline, true, false, true, ResultIdleTimeout},
		{"idle while shutting down", deadline, false, true, true, ResultIdleTimeout},
		{"busy, cut by shutdown", deadline, true, true, false, ResultShutdown},
		{"closed by shutdown", closed, false, true, false, ResultShutdown},
		{"other client error", errors.New("tls: bad record MAC"), true, false, false, ResultClientReset},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := endOf(c.err, c.fromClient, c.quitting, c.idleExpired); got != c.want {
				t.Errorf("endOf = %s, want %s", got, c.want)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	for result, want := range map[string]int{
		ResultOK: 200, ResultIdleTimeout: 200, ResultClientReset: 200, ResultTargetUnreached: 200,
		ResultBadClientHello: 400, ResultTLSFailed: 400, ResultConnectFailed: 502, ResultNoTarget: 503,
	} {
		if got := status(result); got != want {
			t.Errorf("status(%s) = %d, want %d", result, got, want)
		}
	}
}
