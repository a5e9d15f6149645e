package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
	"github.com/magicconch/conch/internal/engine"
)

// Error types, as OpenAI names them, so its client libraries raise the right exception.
const (
	typeInvalid     = "invalid_request_error"
	typeAuth        = "authentication_error"
	typeNotFound    = "not_found_error"
	typeUnavailable = "service_unavailable"
	typeOverloaded  = "server_overloaded"
	typeServer      = "server_error"
)

// apiError is every error conchd answers with: {"error": {message, type, param, code}}.
type apiError struct {
	Status  int    `json:"-"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param,omitempty"` // the request field at fault
	Code    string `json:"code,omitempty"`
}

func (e *apiError) Error() string { return e.Message }

type errorBody struct {
	Error *apiError `json:"error"`
}

func badRequest(param, format string, args ...any) *apiError {
	msg := fmt.Sprintf(format, args...)
	if param != "" {
		msg = param + ": " + msg
	}
	return &apiError{Status: http.StatusBadRequest, Type: typeInvalid, Param: param, Message: msg}
}

func errNotFound(msg string) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: typeNotFound, Message: msg}
}

func errModelNotFound(name string) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: typeInvalid, Param: "model", Code: "model_not_found",
		Message: fmt.Sprintf("model %q does not exist: GET /v1/models (or /api/tags) lists the models served", name)}
}

// abort answers with e and stops the handler chain; on Ollama's routes as Ollama does.
func abort(c *gin.Context, e *apiError) {
	if c.GetBool(ollamaStyle) {
		c.AbortWithStatusJSON(e.Status, gin.H{"error": e.Message})
		return
	}
	c.AbortWithStatusJSON(e.Status, errorBody{e})
}

// submitError maps an engine.Submit error to an answer.
func submitError(c *gin.Context, err error, param string) *apiError {
	switch {
	case errors.Is(err, engine.ErrQueueFull):
		c.Header("Retry-After", "1")
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeOverloaded, Code: "queue_full",
			Message: "the server is busy (request queue full); retry later"}
	case errors.Is(err, engine.ErrClosed):
		c.Header("Retry-After", "5")
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Message: "the server is shutting down"}
	case errors.Is(err, engine.ErrUnknownModel):
		return errModelNotFound(err.Error())
	default:
		return badRequest(param, "%v", err)
	}
}

// runError is an error that happened while generating (after the request was accepted).
func runError(err error) *apiError {
	if errors.Is(err, engine.ErrClosed) {
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Message: "the server shut down before the answer was complete"}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: err.Error()}
}

func statusLabel(code int) string { return strconv.Itoa(code) }
