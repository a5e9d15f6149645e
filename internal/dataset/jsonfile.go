package dataset

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// record is one JSON object of a data file, with where it came from for error messages.
type record struct {
	index  int // 0-based position in the file
	line   int // 1-based line where the record starts
	fields map[string]json.RawMessage
}

// parseRecords reads a JSON array of objects or JSON Lines (one object per line), the two
// layouts Hugging Face's json loader accepts. name is used in error messages.
func parseRecords(name string, data []byte) ([]record, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, nil
	}
	if trimmed[0] == '[' {
		return parseArray(name, data)
	}
	return parseLines(name, data)
}

func parseArray(name string, data []byte) ([]record, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // the opening '['
		return nil, wholeFileError(name, data, err)
	}
	var recs []record
	for dec.More() {
		start := skipSeparators(data, int(dec.InputOffset()))
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, wholeFileError(name, data, err)
		}
		r, err := newRecord(name, len(recs), lineAt(data, start), raw)
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, wholeFileError(name, data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s: line %d: unexpected data after the closing ']'", name, lineAt(data, skipSeparators(data, int(dec.InputOffset()))))
	}
	return recs, nil
}

func parseLines(name string, data []byte) ([]record, error) {
	var recs []record
	off := 0
	for lineNo := 1; off < len(data); lineNo++ {
		end := bytes.IndexByte(data[off:], '\n')
		if end < 0 {
			end = len(data) - off
		}
		line := bytes.TrimSpace(data[off : off+end])
		lineStart := off
		off += end + 1
		if len(line) == 0 {
			continue
		}
		if !json.Valid(line) {
			var v any
			err := json.Unmarshal(line, &v)
			var se *json.SyntaxError
			if errors.As(err, &se) {
				return nil, fmt.Errorf("%s: line %d, column %d (byte %d): invalid JSON: %s", name, lineNo, se.Offset, lineStart+int(se.Offset)-1, se.Error())
			}
			return nil, fmt.Errorf("%s: line %d: invalid JSON: %v", name, lineNo, err)
		}
		r, err := newRecord(name, len(recs), lineNo, line)
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	return recs, nil
}

func newRecord(name string, index, line int, raw []byte) (record, error) {
	r := record{index: index, line: line}
	if err := json.Unmarshal(raw, &r.fields); err != nil || r.fields == nil {
		return r, r.errorf(name, "must be a JSON object, not %s", kindOf(raw))
	}
	return r, nil
}

// errorf formats "file: record N (line L): message".
func (r record) errorf(name, format string, args ...any) error {
	return fmt.Errorf("%s: record %d (line %d): %s", name, r.index, r.line, fmt.Sprintf(format, args...))
}

// str reads an optional string field: absent or null give ok=false.
func (r record) str(name, key string) (s string, ok bool, err error) {
	raw, present := r.fields[key]
	if !present || isNull(raw) {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, r.errorf(name, "%q must be a string, not %s", key, kindOf(raw))
	}
	return s, true, nil
}

// requiredStr reads a string field that must be there.
func (r record) requiredStr(name, key string) (string, error) {
	s, ok, err := r.str(name, key)
	if err != nil {
		return "", err
	}
	if !ok {
		if _, present := r.fields[key]; present {
			return "", r.errorf(name, "%q must be a string, not null", key)
		}
		return "", r.errorf(name, "missing %q", key)
	}
	return s, nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// kindOf names the JSON type of raw for messages ("a number", "an array", ...).
func kindOf(raw []byte) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "struct", "map":
		return "JSON object"
	case "slice", "array":
		return "list"
	}
	return "number"
}

// wholeFileError reports a streaming decode error with the position json.Unmarshal finds
// for the whole file (the streaming decoder's offsets are not absolute).
func wholeFileError(name string, data []byte, err error) error {
	var v any
	if err2 := json.Unmarshal(data, &v); err2 != nil {
		return jsonError(name, data, err2)
	}
	return jsonError(name, data, err)
}

// jsonError turns a decoding error into "file: line L, column C (byte B): ...".
func jsonError(name string, data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		// Offset counts the bytes read, the offending one included.
		at := max(int(se.Offset)-1, 0)
		line, col := lineCol(data, at)
		return fmt.Errorf("%s: line %d, column %d (byte %d): invalid JSON: %s", name, line, col, at, se.Error())
	case errors.As(err, &te):
		line, col := lineCol(data, int(te.Offset))
		return fmt.Errorf("%s: line %d, column %d: expected a %s, found %s", name, line, col, jsonTypeName(te.Type.Kind().String()), te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		line, col := lineCol(data, len(data))
		return fmt.Errorf("%s: line %d, column %d (byte %d): invalid JSON: unexpected end of file", name, line, col, len(data))
	}
	return fmt.Errorf("%s: invalid JSON: %v", name, err)
}

func skipSeparators(data []byte, off int) int {
	for off < len(data) && strings.IndexByte(" \t\r\n,", data[off]) >= 0 {
		off++
	}
	return off
}

func lineAt(data []byte, off int) int {
	l, _ := lineCol(data, off)
	return l
}

func lineCol(data []byte, off int) (line, col int) {
	off = min(max(off, 0), len(data))
	line = 1 + bytes.Count(data[:off], []byte{'\n'})
	col = off - bytes.LastIndexByte(data[:off], '\n') // 1-based: LastIndexByte is -1 on the first line
	return line, col
}
