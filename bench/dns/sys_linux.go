package main

import "syscall"

// sysProcAttr puts a server in its own process group so that forked
// children (NSD) can be killed together.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
