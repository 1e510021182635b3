package e2e

import (
	"net/http"
	"testing"

	"github.com/agenthost/agenthost/api"
	"github.com/agenthost/agenthost/internal/openapicheck"
)

// openAPIChecker validates every answer of the run against the API's
// OpenAPI document: real responses from a real agent, not hand-made ones.
func openAPIChecker(t *testing.T) func(method, path string, res *http.Response, body []byte) {
	t.Helper()
	c, err := openapicheck.New(api.OpenAPIDocument())
	if err != nil {
		t.Fatal(err)
	}
	return func(method, path string, res *http.Response, body []byte) {
		if err := c.CheckResponse(method, path, res.StatusCode, res.Header, body); err != nil {
			t.Errorf("%s %s → %d does not match the OpenAPI document: %v\n%s", method, path, res.StatusCode, err, body)
		}
	}
}
