package api

import (
	"encoding/json"
	"net/http"

	"github.com/gin-gonic/gin"
)

// sse writes Server-Sent Events: "event: name" (optional) and one "data:" line of JSON
// per event, each flushed at once.
type sse struct {
	w       gin.ResponseWriter
	started bool
}

func newSSE(c *gin.Context) *sse { return &sse{w: c.Writer} }

func (s *sse) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no") // nginx and friends: do not buffer the stream
	s.w.WriteHeader(http.StatusOK)
}

// send writes one event; event "" is a plain message. JSON never contains a raw newline,
// so one data line always holds the whole payload.
func (s *sse) send(event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.raw(event, b)
}

func (s *sse) raw(event string, data []byte) error {
	s.start()
	buf := make([]byte, 0, len(data)+len(event)+16)
	if event != "" {
		buf = append(buf, "event: "...)
		buf = append(buf, event...)
		buf = append(buf, '\n')
	}
	buf = append(buf, "data: "...)
	buf = append(buf, data...)
	buf = append(buf, "\n\n"...)
	if _, err := s.w.Write(buf); err != nil {
		return err
	}
	s.w.Flush()
	return nil
}

// sendError ends an OpenAI stream with the error as a data event (the official clients
// raise it).
func (s *sse) sendError(e *apiError) { s.send("", errorBody{e}) }
