package api

import (
	"bytes"
	"crypto/sha256"
	"regexp"
	"testing"
)

func TestTokenFormAndChecksum(t *testing.T) {
	scanner := regexp.MustCompile(`^ah_live_[0-9A-Za-z]{49}$`)
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		tok, hash, last4, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if !scanner.MatchString(tok) || len(tok) != TokenLen || seen[tok] {
			t.Fatalf("token %q (len %d, seen %v)", tok, len(tok), seen[tok])
		}
		seen[tok] = true
		sum := sha256.Sum256([]byte(tok))
		if !bytes.Equal(hash, sum[:]) || last4 != tok[len(tok)-4:] {
			t.Fatalf("hash or last4 wrong for %q", tok)
		}
		got, ok := ParseToken(tok)
		if !ok || !bytes.Equal(got, hash) {
			t.Fatalf("ParseToken(%q) = %x, %v", tok, got, ok)
		}
		// Any one changed character is caught by the checksum.
		for j := len(TokenPrefix); j < len(tok); j++ {
			b := []byte(tok)
			if b[j] == 'a' {
				b[j] = 'b'
			} else {
				b[j] = 'a'
			}
			if _, ok := ParseToken(string(b)); ok {
				t.Fatalf("a token with character %d changed passed: %q", j, b)
			}
		}
	}
}

func TestParseTokenRefusesOtherShapes(t *testing.T) {
	tok, _, _, _ := NewToken()
	for _, bad := range []string{"", "ah_live_", tok[:len(tok)-1], tok + "0", "ha_live_" + tok[8:], "ah_test_" + tok[8:],
		tok[:20] + "-" + tok[21:], "Bearer " + tok} {
		if _, ok := ParseToken(bad); ok {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	tok, _, _, _ := NewToken()
	f.Add(tok)
	f.Add("ah_live_")
	f.Fuzz(func(t *testing.T, s string) {
		if hash, ok := ParseToken(s); ok {
			sum := sha256.Sum256([]byte(s))
			if !bytes.Equal(hash, sum[:]) || len(s) != TokenLen {
				t.Fatalf("accepted %q with hash %x", s, hash)
			}
		}
	})
}
