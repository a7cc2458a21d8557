package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// progress shows how far long admin work has got ("invoiced 3000 of 10000 workspaces")
// on one line of a terminal, rewritten in place. Off a terminal — a script, CI, a log
// file — it prints nothing, so that what they capture is only the command's output.
// A nil *progress is off.
type progress struct {
	mu      sync.Mutex
	w       io.Writer
	every   time.Duration // at most one update per this, except the first
	last    time.Time
	width   int    // of the line on screen, to blank what a shorter one leaves; 0: none
	pending string // the state to show, not yet drawn
}

// newProgress shows progress on w when terminal says w is one.
func newProgress(w io.Writer, terminal bool) *progress {
	if !terminal || w == nil {
		return nil
	}
	return &progress{w: w, every: 100 * time.Millisecond}
}

// Update replaces the line with a new state. Updates closer together than p.every are
// held back (a redraw per message read would cost more than the work); Done shows the
// last one held.
func (p *progress) Update(format string, args ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending = fmt.Sprintf(format, args...)
	if now := time.Now(); p.width == 0 || now.Sub(p.last) >= p.every {
		p.last = now
		p.draw()
	}
}

func (p *progress) draw() {
	n := utf8.RuneCountInString(p.pending)
	pad := max(p.width-n, 0)
	fmt.Fprintf(p.w, "\r%s%s", p.pending, strings.Repeat(" ", pad))
	p.width = max(n, 1)
	p.pending = ""
}

// Done ends the line, leaving the last state shown; the next Update starts a new one.
func (p *progress) Done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending != "" {
		p.draw()
	}
	if p.width > 0 {
		fmt.Fprintln(p.w)
	}
	p.width = 0
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminalFd(f.Fd())
}
