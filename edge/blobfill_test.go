package edge

import (
	"bytes"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBlobFill: the copy made from parts handed over holds them in order;
// it is nil when it holds fewer bytes than the body; a copy given up, or
// whose writer falls blobQueue parts behind, closes its file and is
// given up without the reader waiting.
func TestBlobFill(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile copies are Linux only")
	}
	body := streamBody(300 << 10)
	now := func(f func()) { go f() }
	before := openFDs(t)

	f := startBlobFill("", now)
	for off := 0; off < len(body); off += 70 << 10 {
		if !f.add(body[off:min(off+70<<10, len(body))]) {
			t.Fatal("add refused with the writer running")
		}
	}
	b := f.finish(len(body))
	if b == nil {
		t.Fatal("no copy")
	}
	got := make([]byte, len(body)+1)
	if n, err := unix.Pread(b.FD(), got, 0); err != nil || !bytes.Equal(got[:n], body) {
		t.Fatalf("the copy holds %d bytes (%v), not the body", n, err)
	}
	b.Release()

	f = startBlobFill("", now)
	f.add(body[:1000])
	if b := f.finish(1001); b != nil {
		t.Error("a copy one byte short was kept")
		b.Release()
	}

	f = startBlobFill("", now)
	f.add(body[:1000])
	f.drop()
	<-f.done

	start := make(chan func(), 1)
	f = startBlobFill("", func(fn func()) { start <- fn })
	for i := range blobQueue {
		if !f.add(body[i : i+1]) {
			t.Fatalf("add %d refused with room in the queue", i)
		}
	}
	if f.add(body[:1]) {
		t.Fatal("add accepted a part past the queue")
	}
	go (<-start)()
	<-f.done
	if n := openFDs(t); n != before {
		t.Errorf("%d descriptors open, %d before: a copy given up left its file open", n, before)
	}
}
