package offlinemodel

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func post(t *testing.T, srv *httptest.Server, body string) *http.Response {
	t.Helper()
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestReplyIsDeterministicWithUsage(t *testing.T) {
	srv := httptest.NewServer(New(nil).Handler())
	defer srv.Close()
	body := `{"model":"x","messages":[{"role":"system","content":"be nice"},{"role":"user","content":[{"type":"text","text":"hello there"}]}]}`
	var first string
	for i := 0; i < 2; i++ {
		resp := post(t, srv, body)
		var out struct {
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
			Usage struct {
				Prompt, Completion, Total int
			} `json:"usage"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		got := out.Choices[0].Message.Content
		if got != "Offline model reply to: hello there" || out.Choices[0].FinishReason != "stop" {
			t.Fatalf("reply = %+v", out)
		}
		if i == 1 && got != first {
			t.Fatal("the same conversation got another reply")
		}
		first = got
	}
}

func TestToolDirectiveNeedsTheTool(t *testing.T) {
	srv := httptest.NewServer(New(nil).Handler())
	defer srv.Close()
	msg := `{"role":"user","content":"do it [[tool:bash {\"command\":\"ls\"}]]"}`
	resp := post(t, srv, `{"messages":[`+msg+`],"tools":[{"type":"function","function":{"name":"bash"}}]}`)
	var out struct {
		Choices []struct {
			Message struct {
				ToolCalls []struct {
					Function struct{ Name, Arguments string }
				} `json:"tool_calls"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	c := out.Choices[0]
	if c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 || c.Message.ToolCalls[0].Function.Name != "bash" ||
		c.Message.ToolCalls[0].Function.Arguments != `{"command":"ls"}` {
		t.Fatalf("tool call = %+v", out)
	}
	// Without the tool on offer it answers in text.
	resp = post(t, srv, `{"messages":[`+msg+`]}`)
	json.NewDecoder(resp.Body).Decode(&out)
	if out.Choices[0].FinishReason != "stop" {
		t.Fatalf("asked for a tool it was not given: %+v", out)
	}
	// After a tool result it reports it.
	resp = post(t, srv, `{"messages":[`+msg+`,{"role":"tool","tool_call_id":"c1","content":"file.txt"}]}`)
	var text struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	json.NewDecoder(resp.Body).Decode(&text)
	if text.Choices[0].Message.Content != "Tool result: file.txt" {
		t.Fatalf("after the tool: %+v", text)
	}
}

func TestStreamEndsWithUsageAndDone(t *testing.T) {
	s := New(nil)
	s.wordDelay = time.Millisecond
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	resp := post(t, srv, `{"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"[[say:one two three]] [[slow:20ms]]"}]}`)
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	var text strings.Builder
	var finish string
	var usage map[string]int
	done := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			break
		}
		var chunk struct {
			Choices []struct {
				Delta        struct{ Content string } `json:"delta"`
				FinishReason *string                  `json:"finish_reason"`
			} `json:"choices"`
			Usage map[string]int `json:"usage"`
		}
		if err := json.Unmarshal([]byte(line), &chunk); err != nil {
			t.Fatalf("bad chunk %q: %v", line, err)
		}
		for _, c := range chunk.Choices {
			text.WriteString(c.Delta.Content)
			if c.FinishReason != nil {
				finish = *c.FinishReason
			}
		}
		if chunk.Usage != nil {
			usage = chunk.Usage
		}
	}
	if !done || finish != "stop" || !strings.HasPrefix(text.String(), "one two three") {
		t.Fatalf("stream: done %v, finish %q, text %q", done, finish, text.String())
	}
	if usage["completion_tokens"] != 3 || usage["total_tokens"] != usage["prompt_tokens"]+3 {
		t.Fatalf("usage = %v", usage)
	}
}

func TestBadRequestIsRefused(t *testing.T) {
	srv := httptest.NewServer(New(nil).Handler())
	defer srv.Close()
	if resp := post(t, srv, `{"messages":`); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d", resp.StatusCode)
	}
}
