package llama

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// feed splits text into pieces at every byte boundary pattern given by cuts and runs
// them through a TextStream, checking that every emitted piece is valid UTF-8.
func feed(t *testing.T, ts *TextStream, pieces [][]byte) string {
	t.Helper()
	var out strings.Builder
	for _, p := range pieces {
		s := ts.Write(p)
		if !utf8.ValidString(s) {
			t.Fatalf("piece %q is not valid UTF-8", s)
		}
		out.WriteString(s)
	}
	s := ts.Flush()
	if !utf8.ValidString(s) {
		t.Fatalf("flush %q is not valid UTF-8", s)
	}
	out.WriteString(s)
	return out.String()
}

func bytewise(s string) [][]byte {
	var p [][]byte
	for i := 0; i < len(s); i++ {
		p = append(p, []byte{s[i]})
	}
	return p
}

func TestTextStreamWholeCharacters(t *testing.T) {
	text := "您好，我是蟹堡王的神奇海螺 🐚 ok"
	// every byte on its own: multi-byte characters must be held until complete
	if got := feed(t, NewTextStream(nil), bytewise(text)); got != text {
		t.Fatalf("got %q want %q", got, text)
	}
	// pieces that split characters 1/2 and 2/1
	b := []byte("海螺")
	pieces := [][]byte{b[:1], b[1:4], b[4:]}
	if got := feed(t, NewTextStream(nil), pieces); got != "海螺" {
		t.Fatalf("got %q", got)
	}
}

func TestTextStreamHoldsIncompleteCharacter(t *testing.T) {
	ts := NewTextStream(nil)
	if s := ts.Write([]byte{0xe6, 0xb5}); s != "" {
		t.Fatalf("emitted %q before the character was complete", s)
	}
	if s := ts.Write([]byte{0xb7}); s != "海" {
		t.Fatalf("got %q", s)
	}
	// a lead byte followed by ASCII can never complete: U+FFFD, then the ASCII
	ts.Write([]byte{0xe6, 0x8e})
	if s := ts.Write([]byte("://")); s != "\uFFFD://" {
		t.Fatalf("got %q", s)
	}
	// a broken tail at the end becomes U+FFFD, never raw bytes
	ts.Write([]byte{0xe6})
	if s := ts.Flush(); s != "\uFFFD" {
		t.Fatalf("flush gave %q", s)
	}
}

func TestTextStreamStopStrings(t *testing.T) {
	cases := []struct {
		text  string
		stops []string
		want  string
	}{
		{"hello world<|im_end|>more", []string{"<|im_end|>"}, "hello world"},
		{"abc\n\nUser: hi", []string{"\n\nUser:"}, "abc"},
		{"no stop here <|im", []string{"<|im_end|>"}, "no stop here <|im"},
		{"海螺。结束了", []string{"结束"}, "海螺。"},
		{"x<a<b", []string{"<b", "<a"}, "x"},
	}
	for _, c := range cases {
		ts := NewTextStream(c.stops)
		got := feed(t, ts, bytewise(c.text))
		if got != c.want {
			t.Errorf("%q stops %q: got %q want %q", c.text, c.stops, got, c.want)
		}
	}
}

func TestTextStreamHoldsPossibleStopPrefix(t *testing.T) {
	ts := NewTextStream([]string{"</s>"})
	if s := ts.Write([]byte("answer</")); s != "answer" {
		t.Fatalf("got %q, want the possible stop prefix held back", s)
	}
	if s := ts.Write([]byte("b>")); s != "</b>" {
		t.Fatalf("got %q after the prefix turned out not to be a stop", s)
	}
}

func FuzzTextStream(f *testing.F) {
	f.Add([]byte("你好，世界"), 3, "界")
	f.Add([]byte{0xff, 0xe6, 0xb5, 0xb7}, 1, "")
	f.Fuzz(func(t *testing.T, data []byte, cut int, stop string) {
		ts := NewTextStream([]string{stop})
		if cut <= 0 {
			cut = 1
		}
		var out strings.Builder
		for i := 0; i < len(data); i += cut {
			s := ts.Write(data[i:min(i+cut, len(data))])
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8 piece %q", s)
			}
			out.WriteString(s)
		}
		out.WriteString(ts.Flush())
		if utf8.Valid(data) && stop == "" && out.String() != string(data) {
			t.Fatalf("lost text: %q vs %q", out.String(), data)
		}
	})
}
