//go:build !linux

package edge

import (
	"net"

	"github.com/edgestack/edgestack/edge/cache"
)

func sendHeadAndBlob(net.Conn, []byte, *cache.Blob) (bool, error) { return false, nil }

func defaultSendfileMin() Size { return 64 << 10 }

func (c CacheConfig) sendfileMax() Size {
	if c.SendfileMaxSize == SizeAuto {
		return 768 << 10
	}
	return c.SendfileMaxSize
}
