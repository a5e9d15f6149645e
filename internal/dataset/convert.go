package dataset

import (
	"encoding/json"
	"fmt"
	"strings"
)

// toConversation applies a dataset's formatting to one record.
func toConversation(d DatasetInfo, file string, r record) (Conversation, error) {
	var c Conversation
	var err error
	switch d.Formatting {
	case "alpaca":
		c, err = alpaca(d, file, r)
	case "sharegpt":
		c, err = sharegpt(d, file, r)
	default:
		return c, fmt.Errorf("dataset %q: unknown formatting %q (alpaca or sharegpt)", d.Name, d.Formatting)
	}
	if err != nil {
		return c, err
	}
	if d.Columns.Tools != "" {
		if c.Tools, err = toolsText(file, r, d.Columns.Tools); err != nil {
			return c, err
		}
	}
	c.Source = fmt.Sprintf("%s:%d", file, r.index)
	c.Dataset = d.Name
	return c, nil
}

// alpaca: the user turn is prompt + "\n" + query (empty parts left out), the response
// column is the answer, history holds earlier [prompt, response] pairs, all learned.
func alpaca(d DatasetInfo, file string, r record) (Conversation, error) {
	var c Conversation
	if d.Columns.History != "" {
		if raw, ok := r.fields[d.Columns.History]; ok && !isNull(raw) {
			var pairs []json.RawMessage
			if err := json.Unmarshal(raw, &pairs); err != nil {
				return c, r.errorf(file, "%q must be a list of [prompt, response] pairs, not %s", d.Columns.History, kindOf(raw))
			}
			for i, p := range pairs {
				var pair []string
				if err := json.Unmarshal(p, &pair); err != nil || len(pair) != 2 {
					return c, r.errorf(file, "%q[%d] must be a [prompt, response] pair of strings", d.Columns.History, i)
				}
				c.Messages = append(c.Messages, Message{RoleUser, pair[0]}, Message{RoleAssistant, pair[1]})
			}
		}
	}
	prompt, err := r.requiredStr(file, d.Columns.Prompt)
	if err != nil {
		return c, err
	}
	query, _, err := r.str(file, d.Columns.Query)
	if err != nil {
		return c, err
	}
	response, err := r.requiredStr(file, d.Columns.Response)
	if err != nil {
		return c, err
	}
	var parts []string
	for _, p := range []string{prompt, query} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	c.Messages = append(c.Messages, Message{RoleUser, strings.Join(parts, "\n")}, Message{RoleAssistant, response})
	if d.Columns.System != "" {
		if c.System, _, err = r.str(file, d.Columns.System); err != nil {
			return c, err
		}
	}
	return c, nil
}

// sharegpt: a list of {role_tag: ..., content_tag: ...}; user or observation turns at even
// positions, assistant or function turns at odd ones, an optional leading system turn, and
// an assistant or function turn last.
func sharegpt(d DatasetInfo, file string, r record) (Conversation, error) {
	var c Conversation
	t := d.Tags
	col := d.Columns.Messages
	raw, ok := r.fields[col]
	if !ok {
		return c, r.errorf(file, "missing %q", col)
	}
	var msgs []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &msgs); err != nil {
		return c, r.errorf(file, "%q must be a list of message objects, not %s", col, kindOf(raw))
	}
	type turn struct{ role, content string }
	turns := make([]turn, len(msgs))
	for i, m := range msgs {
		if m == nil {
			return c, r.errorf(file, "%s[%d] must be an object", col, i)
		}
		for _, k := range []string{t.RoleTag, t.ContentTag} {
			v, ok := m[k]
			if !ok {
				return c, r.errorf(file, "%s[%d]: missing %q", col, i, k)
			}
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return c, r.errorf(file, "%s[%d]: %q must be a string, not %s", col, i, k, kindOf(v))
			}
			if k == t.RoleTag {
				turns[i].role = s
			} else {
				turns[i].content = s
			}
		}
	}
	shift := 0 // indexes in messages below count from the file's list, system turn included
	if t.SystemTag != "" && len(turns) > 0 && turns[0].role == t.SystemTag {
		c.System = turns[0].content
		turns = turns[1:]
		shift = 1
	} else if d.Columns.System != "" {
		var err error
		if c.System, _, err = r.str(file, d.Columns.System); err != nil {
			return c, err
		}
	}
	if len(turns) == 0 {
		return c, r.errorf(file, "%q has no user and assistant turns", col)
	}
	for i, tr := range turns {
		idx := i + shift
		var role string
		switch {
		case i%2 == 0 && tr.role == t.UserTag:
			role = RoleUser
		case i%2 == 0 && tr.role == t.ObservationTag:
			role = RoleTool
		case i%2 == 1 && tr.role == t.AssistantTag:
			role = RoleAssistant
		case i%2 == 1 && tr.role == t.FunctionTag:
			role = RoleToolCall
		case i%2 == 0:
			return c, r.errorf(file, "%s[%d]: role %q where a user turn (%q or %q) is expected", col, idx, tr.role, t.UserTag, t.ObservationTag)
		default:
			return c, r.errorf(file, "%s[%d]: role %q where an assistant turn (%q or %q) is expected", col, idx, tr.role, t.AssistantTag, t.FunctionTag)
		}
		c.Messages = append(c.Messages, Message{role, tr.content})
	}
	if len(turns)%2 != 0 {
		return c, r.errorf(file, "%q ends with a %q turn: the last turn must be the assistant's (%q or %q)", col, turns[len(turns)-1].role, t.AssistantTag, t.FunctionTag)
	}
	return c, nil
}

// toolsText accepts the tools column as LLaMA-Factory stores it (a JSON string holding an
// array) or as an inline JSON array.
func toolsText(file string, r record, key string) (string, error) {
	raw, ok := r.fields[key]
	if !ok || isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return strings.TrimSpace(s), nil
	}
	if k := kindOf(raw); k == "an array" || k == "an object" {
		return strings.TrimSpace(string(raw)), nil
	}
	return "", r.errorf(file, "%q must be a string or a list, not %s", key, kindOf(raw))
}
