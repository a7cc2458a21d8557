package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Headers of a delivery.
const (
	SignatureHeader = "Venna-Signature"   // t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…]
	EventIDHeader   = "Venna-Event-Id"    // the event's ID: what receivers dedupe by
	EventTypeHeader = "Venna-Event-Type"  // the event's type
	DeliveryHeader  = "Venna-Delivery-Id" // the delivery's ID (a replay has its own)
	AttemptHeader   = "Venna-Attempt"     // 1 for the first attempt of a delivery
	userAgent       = "Venna-Webhooks/1"
)

// DefaultTolerance is how far from its own clock a receiver should accept a signature's
// timestamp: a captured delivery replayed later than this is refused.
const DefaultTolerance = 5 * time.Minute

// Sign is the Venna-Signature value of body sent at t: "t=<Unix seconds>" then, per
// secret, ",v1=<hex of HMAC-SHA256(secret, "<t>.<body>")>". Each attempt is signed at its
// own time, so a retry hours later still passes a receiver's tolerance.
func Sign(body []byte, t time.Time, secrets ...string) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	var b strings.Builder
	b.WriteString("t=" + ts)
	for _, s := range secrets {
		b.WriteString(",v1=" + hex.EncodeToString(mac(s, ts, body)))
	}
	return b.String()
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return m.Sum(nil)
}

// Verification errors.
var (
	ErrNoSignature  = errors.New("webhook: no t= and v1= in the signature header")
	ErrBadSignature = errors.New("webhook: no v1 signature matches the body")
	ErrTimestamp    = errors.New("webhook: signature timestamp outside the tolerance")
)

// Verify checks that header, a delivery's Venna-Signature, signs body with secret and
// was made within tolerance of now. It is the algorithm of README's snippets: compute
// HMAC-SHA256(secret, "<t>.<body>") and compare it in constant time with every v1.
func Verify(body []byte, header, secret string, tolerance time.Duration, now time.Time) error {
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrNoSignature
	}
	if d := now.Sub(time.Unix(t, 0)); d > tolerance || d < -tolerance {
		return ErrTimestamp
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrBadSignature
}
