package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
)

// TestKeyRotationWithTheCLI rotates the secrets key of a running server the
// way docs/operations.md says, with the real binary: keys rotate, SIGHUP,
// keys reseal, keys retire, SIGHUP; keys show tells where the secrets are.
func TestKeyRotationWithTheCLI(t *testing.T) {
	bin := buildBinary(t)
	keyFile := filepath.Join(t.TempDir(), "secrets.key")
	if err := keyring.Create(keyFile, "k1"); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(t.TempDir(), "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &serverProcess{t: t, bin: bin, httpAddr: freeAddr(t), log: logFile,
		args: nil}
	p.args = []string{"server", "--name", "s0", "--data-dir", t.TempDir(), "--bind", freeAddr(t), "--http-addr", p.httpAddr,
		"--bootstrap-expect", "1", "--gossip-bind", "127.0.0.1:0", "--secrets-key-file", keyFile}
	p.start()
	t.Cleanup(p.kill)
	waitForStatus(t, p, "a leader", func(s store.Status) bool { return s.State == "Leader" })

	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "AGENTHOST_ADDR="+p.httpAddr)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("agenthost %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	api := func(token, method, path string, body any) map[string]any {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, "http://"+p.httpAddr+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]any
		json.NewDecoder(res.Body).Decode(&m)
		if res.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %v", method, path, res.StatusCode, m)
		}
		return m
	}
	op := strings.TrimSpace(strings.Split(run("server", "bootstrap", "--http-addr", p.httpAddr), "\n")[1])
	org := api(op, "POST", "/api/v1/orgs", map[string]any{"name": "acme"})["id"].(string)
	tenant := api(op, "POST", "/api/v1/orgs/"+org+"/tokens", map[string]any{"label": "t"})["token"].(string)
	for _, k := range []string{"A_KEY", "B_KEY"} {
		api(tenant, "PUT", "/api/v1/secrets", map[string]string{"key": k, "value": "v-" + k})
	}
	if out := run("server", "keys", "show", "--token", op); !strings.Contains(out, "sealing key: k1") || !strings.Contains(out, "k1 seals 2 secrets and 0 agents' runtime passwords") {
		t.Fatalf("keys show before rotation:\n%s", out)
	}

	hangupUntil := func(want string) {
		t.Helper()
		p.cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(20 * time.Second)
		for {
			if out := run("server", "keys", "show", "--token", op); strings.Contains(out, want) {
				return
			} else if time.Now().After(deadline) {
				logs, _ := os.ReadFile(logFile.Name())
				t.Fatalf("after SIGHUP, keys show never said %q:\n%s\nlog:\n%s", want, out, logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	run("server", "keys", "rotate", "--secrets-key-file", keyFile, "--id", "k2")
	hangupUntil("sealing key: k2")
	if out := run("server", "keys", "reseal", "--token", op); !strings.Contains(out, "re-sealed 2 secrets and runtime passwords") || !strings.Contains(out, "k2 seals 2 secrets") {
		t.Fatalf("keys reseal:\n%s", out)
	}
	run("server", "keys", "retire", "--secrets-key-file", keyFile, "--id", "k1")
	if k, err := keyring.Load(keyFile); err != nil || k.Has("k1") || k.CurrentID() != "k2" {
		t.Fatalf("key file after retire: %v", err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	// The secrets still work: replacing one answers 200 (it existed), and
	// the server logged the reload.
	deadline := time.Now().Add(20 * time.Second)
	for logs, _ := os.ReadFile(logFile.Name()); strings.Count(string(logs), "secrets key file reloaded") < 2; logs, _ = os.ReadFile(logFile.Name()) {
		if time.Now().After(deadline) {
			t.Fatalf("second reload not logged:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := run("server", "keys", "show", "--token", op); !strings.Contains(out, "k2 seals 2 secrets") || strings.Contains(out, "k1") {
		t.Fatalf("keys show at the end:\n%s", out)
	}
	if created := api(tenant, "PUT", "/api/v1/secrets", map[string]string{"key": "A_KEY", "value": "v2"})["created"]; created != false {
		t.Fatalf("replacing A_KEY: created = %v", created)
	}
	// The sealing key cannot be retired.
	if out, err := exec.Command(bin, "server", "keys", "retire", "--secrets-key-file", keyFile, "--id", "k2").CombinedOutput(); err == nil {
		t.Fatalf("the sealing key was retired:\n%s", out)
	}
}
