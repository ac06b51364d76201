package edge

import (
	"crypto/tls"
	"fmt"
)

func loadPair(p CertPair) (tls.Certificate, error) {
	if p.CertFile == "" || p.KeyFile == "" {
		return tls.Certificate{}, fmt.Errorf("cert_file and key_file are both required")
	}
	c, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		return c, fmt.Errorf("load %s/%s: %w", p.CertFile, p.KeyFile, err)
	}
	return c, nil
}
