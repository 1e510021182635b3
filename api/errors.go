package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/agenthost/agenthost/nodeagent/runtime"
	"github.com/agenthost/agenthost/nodeagent/runtime/remote"
	"github.com/agenthost/agenthost/store"
)

// Error is an answer other than success: the HTTP status, a stable
// machine-readable code, and a message for people. Every error leaves the
// API as {"error": {"code", "message", "requestId"}}.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

func apiError(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Error codes. They are part of the API: clients may switch on them.
const (
	CodeInvalidRequest     = "invalid_request"
	CodeUnauthenticated    = "unauthenticated"
	CodeForbidden          = "forbidden"
	CodeNotFound           = "not_found"
	CodeMethodNotAllowed   = "method_not_allowed"
	CodeConflict           = "conflict"
	CodeAgentNotRunning    = "agent_not_running"
	CodeAgentNotReady      = "agent_not_ready"
	CodeAgentLimit         = "agent_limit"
	CodeRunningCap         = "running_cap"
	CodeNoPorts            = "no_ports"
	CodeNoCapacity         = "no_capacity"
	CodeUnavailable        = "unavailable"
	CodeOutcomeUnknown     = "outcome_unknown"
	CodeAgentNotResponding = "agent_not_responding"
	CodeProvisioningFailed = "provisioning_failed"
	CodeTimeout            = "timeout"
	CodeIdempotencyInUse   = "idempotency_key_in_use"
	CodeIdempotencyReused  = "idempotency_key_reused"
	CodeSecretsUnavailable = "secrets_unavailable"
	CodeNotLeader          = "not_leader"
	CodeSignupClosed       = "signup_closed"
	CodeRateLimited        = "rate_limited"
	CodeServerBehind       = "server_behind"
	CodeInternal           = "internal"
)

// Shorthands for the common answers.
func badRequest(format string, args ...any) *Error {
	return apiError(http.StatusBadRequest, CodeInvalidRequest, format, args...)
}

func notFound(format string, args ...any) *Error {
	return apiError(http.StatusNotFound, CodeNotFound, format, args...)
}

func notRunning(id string) *Error {
	return apiError(http.StatusBadRequest, CodeAgentNotRunning, "agent %s is not running", id)
}

// toAPIError maps an error from the store, the scheduler or a runtime to
// the documented status: the one place where that mapping lives.
func toAPIError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, runtime.ErrNotFound):
		return apiError(http.StatusNotFound, CodeNotFound, "%s", err)
	case errors.Is(err, store.ErrInvalid), errors.Is(err, runtime.ErrInvalid):
		return apiError(http.StatusBadRequest, CodeInvalidRequest, "%s", err)
	case errors.Is(err, remote.ErrNotRunning):
		return apiError(http.StatusBadRequest, CodeAgentNotRunning, "agent is not running")
	case errors.Is(err, store.ErrAlreadyExists), errors.Is(err, store.ErrConflict):
		return apiError(http.StatusConflict, CodeConflict, "%s", err)
	case errors.Is(err, store.ErrAgentLimit):
		return apiError(http.StatusTooManyRequests, CodeAgentLimit, "agent limit reached for your plan")
	case errors.Is(err, store.ErrRunningCap):
		return apiError(http.StatusServiceUnavailable, CodeRunningCap, "concurrent agent cap reached for your plan")
	case errors.Is(err, store.ErrNoPorts):
		return apiError(http.StatusServiceUnavailable, CodeNoPorts, "no available ports; retry later")
	case errors.Is(err, store.ErrNoNodeFits), errors.Is(err, store.ErrNoCapacity), errors.Is(err, store.ErrNodeNotEligible):
		return apiError(http.StatusServiceUnavailable, CodeNoCapacity, "no node has room for the agent; retry later")
	case errors.Is(err, store.ErrOutcomeUnknown):
		return apiError(http.StatusServiceUnavailable, CodeOutcomeUnknown,
			"the cluster lost its leader while the request was in flight; it may or may not have taken effect (retry with the same Idempotency-Key to find out)")
	case errors.Is(err, store.ErrBehind):
		// The store's text says whether the write was committed anyway:
		// the client must know before it retries.
		return apiError(http.StatusServiceUnavailable, CodeServerBehind,
			"%s; send requests through the edge proxy or to another server", err)
	case errors.Is(err, store.ErrNoLeader), errors.Is(err, store.ErrNotLeader):
		return apiError(http.StatusServiceUnavailable, CodeUnavailable, "the cluster has no leader right now; retry shortly")
	case errors.Is(err, runtime.ErrUnavailable):
		return apiError(http.StatusBadGateway, CodeAgentNotResponding, "agent is not responding")
	case errors.Is(err, context.DeadlineExceeded):
		return apiError(http.StatusGatewayTimeout, CodeTimeout, "timed out")
	}
	return apiError(http.StatusInternalServerError, CodeInternal, "internal error")
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"requestId,omitempty"`
}

// errSecretsUnavailable answers secrets calls on a server started without a
// key file.
var errSecretsUnavailable = apiError(http.StatusServiceUnavailable, CodeSecretsUnavailable, "secrets are not available: the server has no secrets key file")

// errNoRuntimePasswordKey answers agent creates on a server started without
// a key file: an agent's runtime password is stored sealed, never in the
// clear.
var errNoRuntimePasswordKey = apiError(http.StatusServiceUnavailable, CodeSecretsUnavailable,
	"agents cannot be created through this server: it has no secrets key file to seal their runtime passwords with")
