//go:build !linux

package edge

import (
	"net"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
)

func sendHeadAndBlob(net.Conn, []byte, *cache.Blob, bool) (bool, time.Duration, error) {
	return false, 0, nil
}

func writeMeasured(net.Conn, []byte, []byte) (bool, time.Duration, error) { return false, 0, nil }

func defaultSendfileMin() Size { return 64 << 10 }

func (c CacheConfig) sendfileMax() Size {
	if c.SendfileMaxSize == SizeAuto {
		return 768 << 10
	}
	return c.SendfileMaxSize
}
