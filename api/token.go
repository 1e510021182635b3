package api

import (
	"crypto/rand"
	"crypto/sha256"
	"hash/crc32"
	"math/big"
	"strings"
)

// Tokens look like ah_live_<43 base62 characters of 32 random bytes><6
// base62 characters of a CRC-32 over everything before them>: a fixed prefix
// and a checksum, so that secret scanners can recognise a token
// (ah_live_[0-9A-Za-z]{49}) without false alarms, and so that a mistyped
// token is refused without looking anything up. Only the token's SHA-256 is
// stored (store.Token.Hash); the token itself is shown once.
const (
	TokenPrefix      = "ah_live_"
	tokenBodyLen     = 43 // 32 bytes in base62
	tokenChecksumLen = 6  // 32 bits in base62
	TokenLen         = len(TokenPrefix) + tokenBodyLen + tokenChecksumLen
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewToken makes a token and returns it with what the store keeps of it.
func NewToken() (token string, hash []byte, last4 string, err error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", nil, "", err
	}
	body := TokenPrefix + encode62(new(big.Int).SetBytes(raw), tokenBodyLen)
	token = body + checksum(body)
	sum := sha256.Sum256([]byte(token))
	return token, sum[:], token[len(token)-4:], nil
}

// ParseToken checks a token's form and checksum and returns the hash it is
// stored under; ok is false for anything that cannot be a token.
func ParseToken(token string) (hash []byte, ok bool) {
	if len(token) != TokenLen || !strings.HasPrefix(token, TokenPrefix) {
		return nil, false
	}
	for i := len(TokenPrefix); i < len(token); i++ {
		if strings.IndexByte(base62, token[i]) < 0 {
			return nil, false
		}
	}
	body := token[:len(token)-tokenChecksumLen]
	if checksum(body) != token[len(body):] {
		return nil, false
	}
	sum := sha256.Sum256([]byte(token))
	return sum[:], true
}

func checksum(body string) string {
	return encode62(big.NewInt(int64(crc32.ChecksumIEEE([]byte(body)))), tokenChecksumLen)
}

// encode62 writes n in base62, left-padded with zeros to width.
func encode62(n *big.Int, width int) string {
	out := make([]byte, width)
	for i := range out {
		out[i] = '0'
	}
	base := big.NewInt(62)
	mod := new(big.Int)
	n = new(big.Int).Set(n)
	for i := width - 1; i >= 0 && n.Sign() > 0; i-- {
		n.DivMod(n, base, mod)
		out[i] = base62[mod.Int64()]
	}
	return string(out)
}
