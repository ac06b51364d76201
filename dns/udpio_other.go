//go:build !linux

package dnsserver

import "net"

func newUDPIO(conn *net.UDPConn, n int) (udpIO, error) { return newXnetIO(conn, n), nil }
