package opencode_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/nodeagent/runtime"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode/opencodetest"
)

// BenchmarkFirstToken measures the time from sending a message to its first
// streamed token, through the adapter (Client.Send, then its event
// subscription) and directly (prompt_async, then OpenCode's /event stream read
// by hand), alternating the two against one OpenCode so that both see the
// same machine. It reports both medians and adapter_vs_direct, the direct
// median over the adapter's: 1.00 means the adapter adds nothing, and the
// target is at least 0.95. Run it with -benchtime=30x.
func BenchmarkFirstToken(b *testing.B) {
	srv := opencodetest.Start(b, opencode.AgentConfig{})
	c, err := opencode.New(opencode.Config{BaseURL: srv.URL, Password: srv.Password})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	adapterEvents := make(chan runtime.Event, 4096)
	defer c.Subscribe(adapterEvents)()
	directFirst := followFirstDeltas(b, srv)

	var direct, adapter []time.Duration
	viaAdapter := func(i int) {
		s, err := c.CreateSession(ctx, "")
		if err != nil {
			b.Fatal(err)
		}
		drain(adapterEvents)
		start := time.Now()
		if err := c.Send(ctx, s.ID, fmt.Sprintf("adapter %d", i)); err != nil {
			b.Fatal(err)
		}
		waitAdapterDelta(b, adapterEvents, s.ID)
		adapter = append(adapter, time.Since(start))
		waitIdle(b, c)
	}
	viaAPI := func(i int) {
		s, err := c.CreateSession(ctx, "")
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		body := fmt.Sprintf(`{"parts":[{"type":"text","text":"direct %d"}]}`, i)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/session/"+s.ID+"/prompt_async", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth(opencode.Username, srv.Password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode >= 300 {
			b.Fatalf("prompt_async: %v %v", resp, err)
		}
		resp.Body.Close()
		waitDirectDelta(b, directFirst, s.ID)
		direct = append(direct, time.Since(start))
		waitIdle(b, c)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate which path goes first, so that neither always follows
		// the other's leftovers (OpenCode titles a session after its first
		// reply, in the background).
		if i%2 == 0 {
			viaAdapter(i)
			viaAPI(i)
		} else {
			viaAPI(i)
			viaAdapter(i)
		}
	}
	b.StopTimer()
	d, a := median(direct), median(adapter)
	b.ReportMetric(float64(d.Microseconds())/1000, "direct_ms")
	b.ReportMetric(float64(a.Microseconds())/1000, "adapter_ms")
	b.ReportMetric(float64(d)/float64(a), "adapter_vs_direct")
}

func drain(ch chan runtime.Event) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func waitAdapterDelta(b *testing.B, ch chan runtime.Event, sessionID string) {
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev := <-ch:
			if ev.Type == "message.part.delta" && bytes.Contains(ev.Data, []byte(sessionID)) {
				return
			}
		case <-timeout:
			b.Fatal("no first token through the adapter after 60 s")
		}
	}
}

func waitDirectDelta(b *testing.B, ch chan string, sessionID string) {
	timeout := time.After(60 * time.Second)
	for {
		select {
		case id := <-ch:
			if id == sessionID {
				return
			}
		case <-timeout:
			b.Fatal("no first token directly after 60 s")
		}
	}
}

// followFirstDeltas reads OpenCode's event stream itself and reports the
// session of every text delta.
func followFirstDeltas(b *testing.B, srv *opencodetest.Server) chan string {
	out := make(chan string, 4096)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/event", nil)
	req.SetBasicAuth(opencode.Username, srv.Password)
	req.Header.Set("Accept", "text/event-stream")
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var ev struct {
				Type       string `json:"type"`
				Properties struct {
					SessionID string `json:"sessionID"`
				} `json:"properties"`
			}
			if json.Unmarshal([]byte(data), &ev) == nil && ev.Type == "message.part.delta" {
				select {
				case out <- ev.Properties.SessionID:
				default:
				}
			}
		}
	}()
	return out
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
