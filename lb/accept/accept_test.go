package accept

import (
	"errors"
	"net"
	"testing"
	"time"
)

// flaky fails with a timeout error twice, then accepts, then fails hard.
type flaky struct {
	net.Listener
	n int
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "temporary" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var errHard = errors.New("hard")

func (f *flaky) Accept() (net.Conn, error) {
	f.n++
	switch f.n {
	case 1, 2:
		return nil, timeoutErr{}
	case 3:
		a, _ := net.Pipe()
		return a, nil
	default:
		return nil, errHard
	}
}

func TestNext(t *testing.T) {
	f := &flaky{}
	start := time.Now()
	c, err := Next(f, func() bool { return false })
	if err != nil || c == nil || f.n != 3 {
		t.Fatalf("after two temporary errors: conn %v, err %v, calls %d", c, err, f.n)
	}
	if time.Since(start) < 15*time.Millisecond {
		t.Errorf("no back-off between temporary errors")
	}
	if _, err := Next(f, func() bool { return false }); !errors.Is(err, errHard) {
		t.Errorf("hard error: %v", err)
	}
	if c, err := Next(f, func() bool { return true }); c != nil || err != nil {
		t.Errorf("while stopping: %v, %v; want nil, nil", c, err)
	}
}
