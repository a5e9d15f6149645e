package dataset

// Roles of a Message. LLaMA-Factory's "observation" is RoleTool (a tool's result, on the
// prompt side) and its "function" is RoleToolCall (the assistant calling a tool: it is
// learned like any assistant turn).
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool"
	RoleToolCall  = "tool_call"
)

// Message is one turn of a conversation.
type Message struct{ Role, Content string }

// Conversation is one training example (or one chat to serve).
type Conversation struct {
	System   string    // system prompt; "" means the template's default
	Tools    string    // tool descriptions (a JSON array as text), "" when none
	Messages []Message // user/tool turns alternating with assistant/tool_call turns
	Source   string    // "file:record" for error messages and logs
	Dataset  string    // the registry name it was loaded from (MaxSamples counts per dataset)
}

// responseRole reports whether a role is the model's own output (learned in training).
func responseRole(role string) bool { return role == RoleAssistant || role == RoleToolCall }
