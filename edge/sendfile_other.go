//go:build !linux

package edge

import (
	"net"

	"github.com/edgestack/edgestack/edge/cache"
)

func sendHeadAndBlob(net.Conn, []byte, *cache.Blob) (bool, error) { return false, nil }

func defaultSendfileMin() Size { return 64 << 10 }

func defaultSendfileMax() Size { return 768 << 10 }
