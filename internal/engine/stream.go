package engine

import (
	"context"
	"strings"
	"sync"
)

// Stream carries one request's output from the engine to its caller. The engine appends
// without ever blocking; the caller takes whatever has accumulated, so a slow reader
// gets larger pieces instead of slowing the engine down.
type Stream struct {
	mu      sync.Mutex
	pending strings.Builder
	lps     []TokenLogprob // not yet taken
	ended   bool
	res     Result
	err     error
	notify  chan struct{} // cap 1
	onEnd   func()
	endOnce sync.Once
}

func newStream() *Stream { return &Stream{notify: make(chan struct{}, 1)} }

func (s *Stream) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// write appends text (engine side).
func (s *Stream) write(text string) {
	if text == "" {
		return
	}
	s.mu.Lock()
	s.pending.WriteString(text)
	s.mu.Unlock()
	s.signal()
}

// writeLogprob appends a token's log probabilities (engine side).
func (s *Stream) writeLogprob(lp TokenLogprob) {
	s.mu.Lock()
	s.lps = append(s.lps, lp)
	s.mu.Unlock()
}

// TakeLogprobs returns the log probabilities of the tokens generated since the previous
// call, for a request that asked for them. A token's entry arrives no later than its
// text.
func (s *Stream) TakeLogprobs() []TokenLogprob {
	s.mu.Lock()
	defer s.mu.Unlock()
	lps := s.lps
	s.lps = nil
	return lps
}

// end finishes the stream with a result or an error (engine side). Later calls are ignored.
func (s *Stream) end(res Result, err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended, s.res, s.err = true, res, err
	s.mu.Unlock()
	s.signal()
	s.endOnce.Do(func() {
		if s.onEnd != nil {
			s.onEnd()
		}
	})
}

// Next waits for output. It returns the text produced since the previous call (whole
// UTF-8 characters, possibly empty at the end) and whether the stream has ended; after
// the end, Result says how. ctx ending stops the wait (the engine learns of it through
// the context given to Submit).
func (s *Stream) Next(ctx context.Context) (text string, done bool) {
	for {
		s.mu.Lock()
		text, done = s.pending.String(), s.ended
		s.pending.Reset()
		s.mu.Unlock()
		if text != "" || done {
			return text, done
		}
		select {
		case <-s.notify:
		case <-ctx.Done():
			return "", false
		}
	}
}

// Wait collects the whole text and the result.
func (s *Stream) Wait(ctx context.Context) (string, Result, error) {
	var b strings.Builder
	for {
		text, done := s.Next(ctx)
		b.WriteString(text)
		if done {
			res, err := s.Result()
			return b.String(), res, err
		}
		if ctx.Err() != nil {
			return b.String(), Result{}, ctx.Err()
		}
	}
}

// Result is the outcome once Next has reported the end: the summary, and an error if the
// request failed or was cancelled (the summary then counts what was done).
func (s *Stream) Result() (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res, s.err
}
