//go:build !linux

package dnsserver

import "syscall"

func reusePort(_, _ string, _ syscall.RawConn) error { return nil }

const canReusePort = false
