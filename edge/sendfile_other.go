//go:build !linux

package edge

import (
	"net"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
)

func sendHeadAndBlob(net.Conn, []byte, *cache.Blob) (bool, error) { return false, nil }

// processCPU: the choice between sendfile and a write is not made here
// (sendHeadAndBlob never sends), so its clock need not run.
func processCPU() time.Duration { return 0 }

func defaultSendfileMin() Size { return 64 << 10 }

func (c CacheConfig) sendfileMax() Size {
	if c.SendfileMaxSize == SizeAuto {
		return 768 << 10
	}
	return c.SendfileMaxSize
}

// prefault: the pages fault in as they are written.
func prefault([]byte) error { return nil }
