package api

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

// Object IDs are a short kind prefix and 20 characters of lowercase base32
// (100 random bits): unguessable, and valid as a DNS label, because an
// agent's ID is also its host name (<agentId>.<domain>). No prefix starts
// with "a" followed by a digit, so an ID never looks like a port address
// (a<port>.<domain>).
const (
	prefixAgent  = "ag"
	prefixScope  = "sc"
	prefixSecret = "se"
	prefixToken  = "tk"
	prefixOrg    = "org"
	// Dashboard accounts and their sessions.
	prefixAccount    = "acc"
	prefixSession    = "ws"
	prefixInvitation = "inv"
)

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func newID(prefix string) string {
	b := make([]byte, 13)
	rand.Read(b) // never fails on Linux
	return prefix + idEncoding.EncodeToString(b)[:20]
}

// derivedID is the ID of an object created by a request with an
// Idempotency-Key: the same org and key always give the same ID, so a retry
// of a create whose outcome was unknown finds the object instead of making
// a second one.
func derivedID(prefix, scope, key string) string {
	sum := sha256.Sum256([]byte(prefix + "\x00" + scope + "\x00" + key))
	return prefix + idEncoding.EncodeToString(sum[:13])[:20]
}

// plausibleID reports whether s could be an ID at all; anything else is a
// 404 without a lookup.
func plausibleID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) < 0
}
