//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package main

// isTerminalFd is false where venna cannot tell: progress is not shown there.
func isTerminalFd(uintptr) bool { return false }
