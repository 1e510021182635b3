// Package openapicheck checks HTTP requests and responses against an OpenAPI
// 3.1 document, so that tests can hold a server to its published contract.
// The JSON Schema work is libopenapi-validator's (github.com/pb33f); this
// package finds the operation for a concrete path, adds what the document
// says outside its operations (405 and unknown-path 404 answers), and checks
// server-sent event streams event by event.
package openapicheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/helpers"
	"github.com/pb33f/libopenapi-validator/paths"
	"github.com/pb33f/libopenapi-validator/responses"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
)

// Names in components/responses that describe answers outside the
// document's operations.
const (
	// MethodNotAllowedResponse is the answer of a documented path to a
	// method it does not document; it must carry an Allow header.
	MethodNotAllowedResponse = "MethodNotAllowed"
	// NoSuchEndpointResponse is the answer to a path under an API prefix
	// that no operation documents.
	NoSuchEndpointResponse = "NoSuchEndpoint"
	// EventsExtension, on a text/event-stream media type, maps each event
	// name to the schema of its data: {"status": {"$ref": …}, …}.
	EventsExtension = "x-events"
)

// Checker checks requests and responses against one OpenAPI 3.1 document.
// It is safe for concurrent use.
type Checker struct {
	doc       libopenapi.Document
	model     *v3.Document
	validator validator.Validator
	opts      *config.ValidationOptions
	version   float32
	// unknownPrefix is where an unmatched path gets NoSuchEndpoint (e.g.
	// "/api/"); "" turns that off.
	unknownPrefix string
}

// New parses an OpenAPI 3.1 document and validates it against the OpenAPI
// 3.1 schema; an invalid document is an error.
func New(doc []byte) (*Checker, error) {
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		return nil, fmt.Errorf("openapicheck: parse: %w", err)
	}
	if v := d.GetVersion(); !strings.HasPrefix(v, "3.1.") {
		return nil, fmt.Errorf("openapicheck: the document is OpenAPI %q, not 3.1", v)
	}
	if ok, errs := schema_validation.ValidateOpenAPIDocument(d); !ok {
		return nil, fmt.Errorf("openapicheck: the document is not valid OpenAPI 3.1: %w", joinValidation(errs))
	}
	m, err := d.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("openapicheck: build model: %w", err)
	}
	opts := []config.Option{config.WithFormatAssertions()}
	c := &Checker{
		doc:           d,
		model:         &m.Model,
		validator:     validator.NewValidatorFromV3Model(&m.Model, opts...),
		opts:          config.NewValidationOptions(opts...),
		version:       helpers.VersionToFloat(m.Model.Version),
		unknownPrefix: "/api/",
	}
	// Every schema the document names for events must exist.
	for _, o := range c.operations() {
		path, method, op := o.path, o.method, o.op
		if op.Responses == nil {
			continue
		}
		for status, resp := range op.Responses.Codes.FromOldest() {
			if resp == nil || resp.Content == nil {
				continue
			}
			for ct, mt := range resp.Content.FromOldest() {
				names, err := eventSchemaNames(mt)
				if err != nil {
					return nil, fmt.Errorf("openapicheck: %s %s %s %s: %w", method, path, status, ct, err)
				}
				for ev, name := range names {
					if c.componentSchema(name) == nil {
						return nil, fmt.Errorf("openapicheck: %s %s %s: event %q names schema %q, which components/schemas lacks", method, path, status, ev, name)
					}
				}
			}
		}
	}
	return c, nil
}

// Model is the document's model, for tests that walk it.
func (c *Checker) Model() *v3.Document { return c.model }

// Operations lists the document's operations as "METHOD /path/template".
func (c *Checker) Operations() []string {
	var out []string
	for _, o := range c.operations() {
		out = append(out, o.method+" "+o.path)
	}
	return out
}

type operation struct {
	path, method string
	op           *v3.Operation
}

func (c *Checker) operations() []operation {
	var out []operation
	if c.model.Paths == nil || c.model.Paths.PathItems == nil {
		return nil
	}
	for path, item := range c.model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			out = append(out, operation{path, strings.ToUpper(method), op})
		}
	}
	return out
}

// Route finds the documented path template for a concrete path, e.g.
// /api/v1/agents/{agentId} for /api/v1/agents/ag123, and whether the
// template documents method.
func (c *Checker) Route(method, path string) (template string, hasMethod bool, err error) {
	req, err := newRequest(method, path, nil)
	if err != nil {
		return "", false, err
	}
	item, _, tmpl := paths.FindPath(req, c.model, nil)
	if item == nil {
		return "", false, nil
	}
	_, ok := item.GetOperations().Get(strings.ToLower(method))
	return tmpl, ok, nil
}

// CheckResponse checks a response to method and path (a concrete path,
// with or without a query): that the document has the operation, lists
// the status, and has a media type for the response's Content-Type, and
// that the body and the headers the document declares for the status
// validate. A 405 of a documented path to another method is checked
// against components/responses/MethodNotAllowed (and its Allow header
// against the path's methods), a 404 of an unknown /api/ path against
// components/responses/NoSuchEndpoint. text/event-stream bodies are checked
// event by event against the media type's x-events.
func (c *Checker) CheckResponse(method, path string, status int, header http.Header, body []byte) error {
	req, err := newRequest(method, path, nil)
	if err != nil {
		return err
	}
	if header == nil {
		header = http.Header{}
	}
	resp := &http.Response{StatusCode: status, Header: header.Clone(), Body: io.NopCloser(bytes.NewReader(body)), Request: req}
	item, _, tmpl := paths.FindPath(req, c.model, nil)
	where := fmt.Sprintf("%s %s → %d", method, req.URL.Path, status)
	switch {
	case item == nil:
		if status == http.StatusNotFound && c.unknownPrefix != "" && strings.HasPrefix(req.URL.Path, c.unknownPrefix) {
			return c.checkComponentResponse(where, NoSuchEndpointResponse, req, resp, body)
		}
		return fmt.Errorf("%s: no path of the document matches %s", where, req.URL.Path)
	case !hasOperation(item, method):
		if status != http.StatusMethodNotAllowed {
			return fmt.Errorf("%s: %s does not document %s", where, tmpl, method)
		}
		if err := c.checkComponentResponse(where, MethodNotAllowedResponse, req, resp, body); err != nil {
			return err
		}
		return checkAllow(where, tmpl, item, header.Get("Allow"))
	}
	if ok, errs := c.validator.GetResponseBodyValidator().ValidateResponseBodyWithPathItem(req, resp, item, tmpl); !ok {
		return fmt.Errorf("%s (%s): %w", where, tmpl, joinValidation(errs))
	}
	mt := responseMediaType(item, method, status, header.Get("Content-Type"))
	if mt != nil && isEventStream(header.Get("Content-Type")) {
		if err := c.checkEvents(req, mt, body); err != nil {
			return fmt.Errorf("%s (%s): %w", where, tmpl, err)
		}
	}
	return nil
}

// CheckRequest checks a request against its operation: path, query and
// header parameters, security and body. The request's body is read and
// put back.
func (c *Checker) CheckRequest(r *http.Request) error {
	if r.Body != nil {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(b))
		defer func() { r.Body = io.NopCloser(bytes.NewReader(b)) }()
	}
	if ok, errs := c.validator.ValidateHttpRequestSync(r); !ok {
		return fmt.Errorf("%s %s: %w", r.Method, r.URL.Path, joinValidation(errs))
	}
	return nil
}

func newRequest(method, path string, body io.Reader) (*http.Request, error) {
	u, err := url.Parse(path)
	if err != nil || !strings.HasPrefix(u.Path, "/") {
		return nil, fmt.Errorf("openapicheck: %q is not an absolute path", path)
	}
	// The host is irrelevant: the document's server is "/".
	req, err := http.NewRequest(method, "http://openapicheck.invalid"+u.RequestURI(), body)
	if err != nil {
		return nil, fmt.Errorf("openapicheck: %w", err)
	}
	return req, nil
}

func hasOperation(item *v3.PathItem, method string) bool {
	_, ok := item.GetOperations().Get(strings.ToLower(method))
	return ok
}

// checkAllow compares an Allow header with the path's documented methods.
func checkAllow(where, tmpl string, item *v3.PathItem, allow string) error {
	var documented, got []string
	for m := range item.GetOperations().KeysFromOldest() {
		documented = append(documented, strings.ToUpper(m))
	}
	for _, m := range strings.Split(allow, ",") {
		if m = strings.TrimSpace(m); m != "" {
			got = append(got, strings.ToUpper(m))
		}
	}
	slices.Sort(documented)
	slices.Sort(got)
	if !slices.Equal(documented, got) {
		return fmt.Errorf("%s: Allow is %q; %s documents %s", where, allow, tmpl, strings.Join(documented, ", "))
	}
	return nil
}

// checkComponentResponse checks a response against components/responses/name.
func (c *Checker) checkComponentResponse(where, name string, req *http.Request, resp *http.Response, body []byte) error {
	if c.model.Components == nil || c.model.Components.Responses == nil {
		return fmt.Errorf("%s: the document has no components/responses/%s", where, name)
	}
	r, ok := c.model.Components.Responses.Get(name)
	if !ok || r == nil {
		return fmt.Errorf("%s: the document has no components/responses/%s", where, name)
	}
	var errs []*verrors.ValidationError
	ct := resp.Header.Get("Content-Type")
	if r.Content != nil && r.Content.Len() > 0 {
		mt, ok := helpers.FindMediaType(r.Content, ct)
		switch {
		case !ok:
			return fmt.Errorf("%s: components/responses/%s has no media type for Content-Type %q", where, name, ct)
		case mt.Schema != nil:
			if _, e := responses.ValidateResponseSchema(&responses.ValidateResponseSchemaInput{
				Request: req, Response: resp, Schema: mt.Schema.Schema(), Version: c.version,
				Options: []config.Option{config.WithExistingOpts(c.opts)},
			}); len(e) > 0 {
				errs = append(errs, e...)
			}
		}
	}
	if r.Headers != nil {
		if _, e := responses.ValidateResponseHeaders(req, resp, r.Headers, "components/responses/"+name, fmt.Sprint(resp.StatusCode),
			config.WithExistingOpts(c.opts)); len(e) > 0 {
			errs = append(errs, e...)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s (components/responses/%s): %w", where, name, joinValidation(errs))
	}
	return nil
}

// responseMediaType is the media type an operation documents for a status
// and content type, or nil.
func responseMediaType(item *v3.PathItem, method string, status int, contentType string) *v3.MediaType {
	op, ok := item.GetOperations().Get(strings.ToLower(method))
	if !ok || op.Responses == nil {
		return nil
	}
	r, ok := op.Responses.Codes.Get(fmt.Sprint(status))
	if !ok || r == nil || r.Content == nil {
		return nil
	}
	mt, ok := helpers.FindMediaType(r.Content, contentType)
	if !ok {
		return nil
	}
	return mt
}

func isEventStream(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "text/event-stream"
}

// eventSchemaNames reads a media type's x-events: event name → the name of
// a schema in components/schemas.
func eventSchemaNames(mt *v3.MediaType) (map[string]string, error) {
	if mt == nil || mt.Extensions == nil {
		return nil, nil
	}
	node, ok := mt.Extensions.Get(EventsExtension)
	if !ok || node == nil {
		return nil, nil
	}
	var raw map[string]map[string]string
	if err := node.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%s: want {event: {$ref: #/components/schemas/…}}: %w", EventsExtension, err)
	}
	out := map[string]string{}
	for ev, r := range raw {
		name, ok := strings.CutPrefix(r["$ref"], "#/components/schemas/")
		if !ok || name == "" {
			return nil, fmt.Errorf("%s: event %q: want a $ref to #/components/schemas/…", EventsExtension, ev)
		}
		out[ev] = name
	}
	return out, nil
}

func (c *Checker) componentSchema(name string) *base.Schema {
	if c.model.Components == nil || c.model.Components.Schemas == nil {
		return nil
	}
	p, ok := c.model.Components.Schemas.Get(name)
	if !ok || p == nil {
		return nil
	}
	return p.Schema()
}

// Event is one server-sent event.
type Event struct {
	Name string
	Data string
}

// ParseEvents splits a text/event-stream body into its events; comment
// lines are skipped, and a trailing event without its blank line (a stream
// cut off) is kept.
func ParseEvents(body []byte) ([]Event, error) {
	var out []Event
	var cur Event
	var data []string
	has := false
	flush := func() {
		if has {
			cur.Data = strings.Join(data, "\n")
			if cur.Name == "" {
				cur.Name = "message"
			}
			out = append(out, cur)
		}
		cur, data, has = Event{}, nil, false
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, ":"):
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				cur.Name, has = value, true
			case "data":
				data, has = append(data, value), true
			case "id", "retry":
				has = true
			default:
				return nil, fmt.Errorf("event stream: unknown field %q", field)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	flush()
	return out, nil
}

// checkEvents checks each event's name is one the media type's x-events
// lists and its data validates against that event's schema.
func (c *Checker) checkEvents(req *http.Request, mt *v3.MediaType, body []byte) error {
	names, err := eventSchemaNames(mt)
	if err != nil || names == nil {
		return err
	}
	events, err := ParseEvents(body)
	if err != nil {
		return err
	}
	for i, ev := range events {
		name, ok := names[ev.Name]
		if !ok {
			return fmt.Errorf("event %d: %q is not one of the documented events %v", i, ev.Name, slices.Sorted(mapsKeys(names)))
		}
		resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(ev.Data)), Request: req}
		if _, errs := responses.ValidateResponseSchema(&responses.ValidateResponseSchemaInput{
			Request: req, Response: resp, Schema: c.componentSchema(name), Version: c.version,
			Options: []config.Option{config.WithExistingOpts(c.opts)},
		}); len(errs) > 0 {
			return fmt.Errorf("event %d (%s, schema %s): %w", i, ev.Name, name, joinValidation(errs))
		}
	}
	return nil
}

func mapsKeys[K comparable, V any](m map[K]V) func(yield func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// joinValidation turns the library's findings into one error that says
// what failed and where.
func joinValidation(errs []*verrors.ValidationError) error {
	var out []error
	for _, e := range errs {
		if e == nil {
			continue
		}
		msg := e.Message
		if e.Reason != "" && e.Reason != e.Message {
			msg += ": " + e.Reason
		}
		for _, f := range e.SchemaValidationErrors {
			if f == nil {
				continue
			}
			loc := f.FieldPath
			if loc == "" {
				loc = f.KeywordLocation
			}
			if loc != "" {
				msg += fmt.Sprintf("; %s: %s", loc, f.Reason)
			} else {
				msg += "; " + f.Reason
			}
		}
		out = append(out, errors.New(msg))
	}
	if len(out) == 0 {
		return errors.New("invalid")
	}
	return errors.Join(out...)
}
