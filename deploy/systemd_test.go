package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// TestSystemdUnitsMatchTheBinary: every flag the units pass is a flag of
// the agenthost command they run, every variable they read is set in their
// example env files (AGENTHOST_EXTRA_ARGS may stay empty), and, where
// systemd-analyze is installed, the units verify.
func TestSystemdUnitsMatchTheBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "agenthost")
	gocmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(gocmd, "build", "-o", bin, "../cmd/agenthost").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	envFiles := map[string][]string{
		"server": {"config/server-1.env", "config/server-2.env", "config/server-3.env"},
		"node":   {"config/node.env"},
		"proxy":  {"config/proxy.env"},
	}
	flagRE := regexp.MustCompile(`(?m)^\s*(--[a-z-]+)`)
	varRE := regexp.MustCompile(`\$\{?([A-Z_]+)\}?`)
	for sub, files := range envFiles {
		unit := "systemd/agenthost-" + sub + ".service"
		b, err := os.ReadFile(unit)
		if err != nil {
			t.Fatal(err)
		}
		line := execStart(string(b))
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "/usr/local/bin/agenthost" || fields[1] != sub {
			t.Fatalf("%s: ExecStart %q does not run agenthost %s", unit, line, sub)
		}
		help, err := exec.Command(bin, sub, "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("agenthost %s --help: %v", sub, err)
		}
		known := map[string]bool{}
		for _, m := range regexp.MustCompile(`(--[a-z-]+)`).FindAllStringSubmatch(string(help), -1) {
			known[m[1]] = true
		}
		for _, m := range flagRE.FindAllStringSubmatch(strings.ReplaceAll(line, " --", "\n--"), -1) {
			if !known[m[1]] {
				t.Errorf("%s passes %s, which agenthost %s does not have", unit, m[1], sub)
			}
		}
		for _, file := range files {
			env := readEnv(t, file)
			for _, m := range varRE.FindAllStringSubmatch(line, -1) {
				v, ok := env[m[1]]
				if !ok || (v == "" && m[1] != "AGENTHOST_EXTRA_ARGS") {
					t.Errorf("%s reads $%s, which %s does not set", unit, m[1], file)
				}
			}
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: units not verified")
		return
	}
	dir := t.TempDir()
	var units []string
	for sub := range envFiles {
		b, err := os.ReadFile("systemd/agenthost-" + sub + ".service")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "agenthost-"+sub+".service")
		writeFile(t, path, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/agenthost", bin)))
		units = append(units, path)
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, units...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=warning")
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// execStart is a unit's ExecStart command line, continuations joined.
func execStart(unit string) string {
	unit = strings.ReplaceAll(unit, "\\\n", " ")
	for _, line := range strings.Split(unit, "\n") {
		if rest, ok := strings.CutPrefix(line, "ExecStart="); ok {
			return strings.Join(strings.Fields(rest), " ")
		}
	}
	return ""
}

// readEnv reads a systemd EnvironmentFile of KEY=VALUE lines.
func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: %q is not KEY=VALUE", path, line)
			continue
		}
		env[k] = v
	}
	return env
}
