// A Go relying party against `tessera serve`: go-oidc v3 (the verifier kube-apiserver and most
// Go services use) does discovery and verifies ID tokens and JWT access tokens with the
// algorithms discovery advertises (its default, which an algorithm change must not break).
//
// Environment: ISSUER, CLIENT_ID, CLIENT_SECRET, AUDIENCE, SCOPE (client_credentials), SPA_ID,
// SPA_REDIRECT, USERNAME, PASSWORD (sign-in), EXPECT_ALG (the alg new tokens must carry),
// SAVED (a file: tokens are verified from it if it exists, and the new ones written to it).
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
)

type tokens struct {
	AccessToken string `json:"access_token"`
	IDToken     string `json:"id_token"`
	Nonce       string `json:"nonce"`
}

func env(name string) string {
	v := os.Getenv(name)
	if v == "" {
		fail(fmt.Errorf("environment variable %s is not set", name))
	}
	return v
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "go-oidc relying party:", err)
	os.Exit(1)
}

func random() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		fail(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func tokenRequest(endpoint string, form url.Values, user, password string) (map[string]any, error) {
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(password))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("token endpoint answered %d: %v", resp.StatusCode, out)
	}
	return out, nil
}

var (
	formAction = regexp.MustCompile(`<form method="post" action="([^"]+)">`)
	hidden     = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
)

// submit posts the page's first form with its hidden fields and `extra`.
func submit(c *http.Client, page string, extra url.Values) (*http.Response, error) {
	m := formAction.FindStringSubmatch(page)
	if m == nil {
		return nil, errors.New("no form on the page: " + page)
	}
	form := url.Values{}
	for _, h := range hidden.FindAllStringSubmatch(page, -1) {
		form.Set(html.UnescapeString(h[1]), html.UnescapeString(h[2]))
	}
	for k, v := range extra {
		form[k] = v
	}
	return c.PostForm(html.UnescapeString(m[1]), form)
}

// signIn runs the authorization code flow with PKCE as a browser would, and redeems the code.
func signIn(p *oidc.Provider, nonce string) (map[string]any, error) {
	jar, _ := cookiejar.New(nil)
	redirect := env("SPA_REDIRECT")
	var code string
	c := &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), redirect) {
			code = req.URL.Query().Get("code")
			return http.ErrUseLastResponse
		}
		return nil
	}}
	verifier := random()
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{
		"response_type": {"code"}, "client_id": {env("SPA_ID")}, "redirect_uri": {redirect},
		"scope": {"openid profile"}, "state": {"go"}, "nonce": {nonce},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}
	resp, err := c.Get(p.Endpoint().AuthURL + "?" + q.Encode())
	login := url.Values{"username": {env("USERNAME")}, "password": {env("PASSWORD")}}
	for step := 0; err == nil && code == "" && step < 4; step++ {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		page := string(body)
		switch {
		case strings.Contains(page, `name="password"`):
			resp, err = submit(c, page, login)
		case strings.Contains(page, `name="decision"`):
			resp, err = submit(c, page, url.Values{"decision": {"allow"}})
		default:
			return nil, fmt.Errorf("unexpected page (%d): %s", resp.StatusCode, page)
		}
	}
	if err != nil {
		return nil, err
	}
	if code == "" {
		return nil, errors.New("the sign-in did not come back with a code")
	}
	return tokenRequest(p.Endpoint().TokenURL, url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
		"client_id": {env("SPA_ID")}, "code_verifier": {verifier},
	}, "", "")
}

func alg(token string) string {
	header, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return ""
	}
	var h struct{ Alg string }
	_ = json.Unmarshal(raw, &h)
	return h.Alg
}

// verify checks both tokens with go-oidc's verifiers, using the algorithms discovery lists.
func verify(ctx context.Context, p *oidc.Provider, t tokens, label string) error {
	id, err := p.Verifier(&oidc.Config{ClientID: env("SPA_ID")}).Verify(ctx, t.IDToken)
	if err != nil {
		return fmt.Errorf("%s ID token (%s): %w", label, alg(t.IDToken), err)
	}
	if id.Nonce != t.Nonce {
		return fmt.Errorf("%s ID token: nonce %q, want %q", label, id.Nonce, t.Nonce)
	}
	at, err := p.Verifier(&oidc.Config{ClientID: env("AUDIENCE")}).Verify(ctx, t.AccessToken)
	if err != nil {
		return fmt.Errorf("%s access token (%s): %w", label, alg(t.AccessToken), err)
	}
	var claims struct {
		ClientID string `json:"client_id"`
	}
	if err := at.Claims(&claims); err != nil || claims.ClientID != env("CLIENT_ID") {
		return fmt.Errorf("%s access token: client_id %q, want %q (%v)", label, claims.ClientID, env("CLIENT_ID"), err)
	}
	fmt.Printf("%s tokens verify: ID token %s, access token %s\n", label, alg(t.IDToken), alg(t.AccessToken))
	return nil
}

func main() {
	ctx := context.Background()
	p, err := oidc.NewProvider(ctx, env("ISSUER"))
	if err != nil {
		fail(fmt.Errorf("discovery: %w", err))
	}
	var discovered struct {
		Algs []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := p.Claims(&discovered); err != nil {
		fail(err)
	}
	fmt.Printf("discovery: id_token_signing_alg_values_supported %v\n", discovered.Algs)

	saved := env("SAVED")
	if old, err := os.ReadFile(saved); err == nil {
		var t tokens
		if err := json.Unmarshal(old, &t); err != nil {
			fail(err)
		}
		if err := verify(ctx, p, t, "earlier"); err != nil {
			fail(err)
		}
	}

	cc, err := tokenRequest(p.Endpoint().TokenURL, url.Values{"grant_type": {"client_credentials"}, "scope": {env("SCOPE")}},
		env("CLIENT_ID"), env("CLIENT_SECRET"))
	if err != nil {
		fail(err)
	}
	nonce := random()
	signedIn, err := signIn(p, nonce)
	if err != nil {
		fail(fmt.Errorf("sign-in: %w", err))
	}
	t := tokens{AccessToken: fmt.Sprint(cc["access_token"]), IDToken: fmt.Sprint(signedIn["id_token"]), Nonce: nonce}
	if err := verify(ctx, p, t, "new"); err != nil {
		fail(err)
	}
	want := env("EXPECT_ALG")
	if alg(t.IDToken) != want || alg(t.AccessToken) != want {
		fail(fmt.Errorf("new tokens are signed with %s/%s, want %s", alg(t.IDToken), alg(t.AccessToken), want))
	}
	out, _ := json.Marshal(t)
	if err := os.WriteFile(saved, out, 0o600); err != nil {
		fail(err)
	}
}
