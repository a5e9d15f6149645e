package llama

import (
	"strings"
	"unicode/utf8"
)

// TextStream turns token pieces (bytes that may end inside a UTF-8 character) into text
// that is always made of whole characters, and holds back text that could be the start
// of a stop string.
type TextStream struct {
	pending []byte   // bytes of an unfinished UTF-8 character
	held    string   // complete text that might begin a stop string
	stops   []string // stop strings
	Stopped bool     // a stop string was seen; nothing more will be emitted
}

// NewTextStream returns a stream that ends at the first of stops (none: never).
// Stop strings that are not valid UTF-8 can never match whole characters and are ignored.
func NewTextStream(stops []string) *TextStream {
	var s []string
	for _, x := range stops {
		if x != "" && utf8.ValidString(x) {
			s = append(s, x)
		}
	}
	return &TextStream{stops: s}
}

// Write adds a token's bytes and returns the text that is now safe to emit.
func (t *TextStream) Write(piece []byte) string {
	if t.Stopped {
		return ""
	}
	t.pending = append(t.pending, piece...)
	n := completePrefix(t.pending)
	// bytes that can no longer form a character (a lead byte followed by ASCII, say)
	// become U+FFFD: callers only ever see valid UTF-8
	text := t.held + strings.ToValidUTF8(string(t.pending[:n]), "\uFFFD")
	t.pending = append(t.pending[:0], t.pending[n:]...)
	return t.release(text)
}

// Flush returns what is left at the end of generation. Incomplete trailing bytes are
// replaced by U+FFFD so that the output stays valid UTF-8.
func (t *TextStream) Flush() string {
	if t.Stopped {
		return ""
	}
	text := t.held + strings.ToValidUTF8(string(t.pending), "\uFFFD")
	t.held, t.pending = "", nil
	return text
}

func (t *TextStream) release(text string) string {
	t.held = ""
	if len(t.stops) == 0 {
		return text
	}
	first := -1
	for _, s := range t.stops {
		if i := strings.Index(text, s); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first >= 0 {
		t.Stopped = true
		return text[:first]
	}
	// hold back the longest suffix of text that is a prefix of a stop string
	hold := 0
	for _, s := range t.stops {
		for k := min(len(s)-1, len(text)); k > hold; k-- {
			if strings.HasPrefix(s, text[len(text)-k:]) {
				hold = k
				break
			}
		}
	}
	// never split a character when holding back
	for hold > 0 && !utf8.RuneStart(text[len(text)-hold]) {
		hold++
	}
	t.held = text[len(text)-hold:]
	return text[:len(text)-hold]
}

// completePrefix is the length of b's longest prefix that does not end inside a
// UTF-8 character. Invalid bytes count as complete (they cannot become valid later).
func completePrefix(b []byte) int {
	for back := 1; back <= 3 && back <= len(b); back++ {
		c := b[len(b)-back]
		if c < 0x80 {
			return len(b)
		}
		if utf8.RuneStart(c) {
			need := 0
			switch {
			case c&0xE0 == 0xC0:
				need = 2
			case c&0xF0 == 0xE0:
				need = 3
			case c&0xF8 == 0xF0:
				need = 4
			}
			if need > back {
				return len(b) - back
			}
			return len(b)
		}
	}
	return len(b)
}
