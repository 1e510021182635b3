package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Response is an API answer: its status code and body.
type Response struct {
	Code int
	Body []byte
}

func (r *Response) String() string {
	if r == nil {
		return "<no response>"
	}
	return fmt.Sprintf("%d %s", r.Code, bytes.TrimSpace(r.Body))
}

// OK reports a 2xx answer.
func (r *Response) OK() bool { return r != nil && r.Code >= 200 && r.Code < 300 }

// Decode unmarshals the body, failing the test when it is not JSON of v.
func (r *Response) Decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r, err)
	}
}

// Do sends a JSON request to addr (a server's HTTP address or the proxy's)
// with a bearer token; body, when not nil, is sent as JSON.
func (c *Cluster) Do(ctx context.Context, addr, method, path, token string, body any) (*Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		return nil, err
	}
	if c.Proxy != nil && addr == c.Proxy.HTTPAddr {
		req.Host = c.Domain // the apex: /api/ goes to a control server
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	return &Response{Code: res.StatusCode, Body: b}, nil
}

// Get reads path into out; anything but 200 is an error.
func (c *Cluster) Get(addr, path, token string, out any) error {
	res, err := c.Do(context.Background(), addr, "GET", path, token, nil)
	if err != nil {
		return err
	}
	if res.Code != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, res)
	}
	return json.Unmarshal(res.Body, out)
}

// Org is an org made for a test, with a tenant token of its own.
type Org struct {
	ID    string
	Token string
}

// CreateOrg makes an org without caps and a tenant token for it, through
// any running server.
func (c *Cluster) CreateOrg(name string) Org {
	c.t.Helper()
	return c.CreateOrgAt(c.anyServer(), name)
}

// CreateOrgAt is CreateOrg through the server (or proxy) at addr.
func (c *Cluster) CreateOrgAt(addr, name string) Org {
	c.t.Helper()
	ctx := context.Background()
	res, err := c.Do(ctx, addr, "POST", "/api/v1/orgs", c.OperatorToken, map[string]any{"name": name})
	if err != nil || res.Code != http.StatusCreated {
		c.t.Fatalf("create org: %v %v", res, err)
	}
	var org struct{ ID string }
	res.Decode(c.t, &org)
	res, err = c.Do(ctx, addr, "POST", "/api/v1/orgs/"+org.ID+"/tokens", c.OperatorToken, map[string]any{"label": "cluster-test"})
	if err != nil || res.Code != http.StatusCreated {
		c.t.Fatalf("create org token: %v %v", res, err)
	}
	var tok struct{ Token string }
	res.Decode(c.t, &tok)
	return Org{ID: org.ID, Token: tok.Token}
}

// Agent is an agent as GET /api/v1/agents lists it.
type Agent struct {
	AgentID string `json:"agentId"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	URL     string `json:"url"`
}

// Port is the agent's port, read from its URL (a<port>.<domain>).
func (a Agent) Port() int {
	u, err := url.Parse(a.URL)
	if err != nil {
		return 0
	}
	host, _, _ := strings.Cut(u.Hostname(), ".")
	port, _ := strconv.Atoi(strings.TrimPrefix(host, "a"))
	return port
}

// Agents lists every agent of the org from the server at addr, sorted by
// id, following the cursor.
func (c *Cluster) Agents(addr string, org Org) ([]Agent, error) {
	var all []Agent
	cursor := ""
	for {
		path := "/api/v1/agents?limit=1000"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		var page struct {
			Agents     []Agent `json:"agents"`
			NextCursor *string `json:"nextCursor"`
		}
		if err := c.Get(addr, path, org.Token, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Agents...)
		if page.NextCursor == nil || *page.NextCursor == "" {
			break
		}
		cursor = *page.NextCursor
	}
	sort.Slice(all, func(i, j int) bool { return all[i].AgentID < all[j].AgentID })
	return all, nil
}
