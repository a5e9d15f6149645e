package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// decodeJSON reads the body into v. Unknown fields are ignored (OpenAI clients send many
// we do not use); a known field of the wrong type, malformed JSON, a body that is not a
// JSON object or is too large are errors that name the field or the byte.
func decodeJSON(c *gin.Context, v any) *apiError {
	// The Content-Type is not checked: curl -d sends form-urlencoded by default, and the
	// body is JSON or an error either way.
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalid,
				Message: fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)}
		}
		return badRequest("", "reading the body: %v", err)
	}
	return unmarshalBody(body, v)
}

// unmarshalBody is the part of decodeJSON the fuzzer drives.
func unmarshalBody(body []byte, v any) *apiError {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return badRequest("", "empty body: send a JSON object")
	}
	if trimmed[0] != '{' {
		return badRequest("", "the body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return badRequest("", "malformed JSON: extra data after the object")
	}
	return nil
}

func jsonError(err error) *apiError {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var fe *fieldError
	switch {
	case errors.As(err, &fe):
		return badRequest(fe.field, "%s", fe.msg)
	case errors.As(err, &typ):
		// Fields of embedded structs come out as "samplingFields.max_tokens".
		field := strings.ReplaceAll(typ.Field, "samplingFields.", "")
		if field == "" {
			field = "body"
		}
		return badRequest(field, "expected %s, got JSON %s", goTypeName(typ.Type.String()), typ.Value)
	case errors.As(err, &syn):
		return badRequest("", "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("", "malformed JSON: unexpected end of the body")
	default:
		return badRequest("", "malformed JSON: %v", err)
	}
}

// goTypeName says what a Go type is in JSON words.
func goTypeName(t string) string {
	t = strings.TrimLeft(t, "*")
	switch {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "string":
		return "a string"
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "[]"):
		return "an array"
	default:
		return "an object"
	}
}

// fieldError is returned by our UnmarshalJSON methods to name the field themselves.
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

// stopList is OpenAI's stop: a string, an array of strings, or null.
type stopList []string

func (s *stopList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*s = nil
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return &fieldError{"stop", "invalid string"}
		}
		*s = stopList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return &fieldError{"stop", "expected a string or an array of strings"}
	}
	*s = many
	return nil
}

// promptInput is the completions prompt: a string, an array of one string, or an array
// of token ids.
type promptInput struct {
	Text   string
	Tokens []int64
	Set    bool
}

func (p *promptInput) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	p.Set = true
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &p.Text); err != nil {
			return &fieldError{"prompt", "invalid string"}
		}
		return nil
	}
	var strs []string
	if err := json.Unmarshal(b, &strs); err == nil {
		if len(strs) != 1 {
			return &fieldError{"prompt", fmt.Sprintf("%d prompts given; send one (batches are not supported)", len(strs))}
		}
		p.Text = strs[0]
		return nil
	}
	if err := json.Unmarshal(b, &p.Tokens); err == nil {
		if len(p.Tokens) == 0 {
			return &fieldError{"prompt", "empty token array"}
		}
		return nil
	}
	return &fieldError{"prompt", "expected a string, an array of one string, or an array of token ids"}
}

// messageContent is a chat message's content: a string, an array of text parts, or null.
type messageContent struct {
	Text string
	Null bool
}

func (m *messageContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		m.Null = true
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &m.Text); err != nil {
			return &fieldError{"messages.content", "invalid string"}
		}
		return nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return &fieldError{"messages.content", "expected a string or an array of content parts"}
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return &fieldError{"messages.content", fmt.Sprintf("content part of type %q is not supported (text only)", p.Type)}
		}
		sb.WriteString(*p.Text)
	}
	m.Text = sb.String()
	return nil
}
