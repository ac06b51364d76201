package ctl

import (
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Certs is the certd command group.
func Certs() Group {
	return Group{
		Name: "certs", Summary: "TLS certificates: request, list, renew, import", Daemon: "certd", Default: DefaultCertd,
		Commands: []Command{
			{Name: "list", Args: "", Summary: "every certificate with state, issuer, expiry, next attempt and last error", Run: certsList},
			{Name: "show", Args: "NAME", Summary: "one certificate's full record", Run: certsShow},
			{Name: "request", Args: "[-key-type p256] [-issuers a,b] [-challenge http-01] NAME...", Summary: "order certificates, one per name (token)", Run: certsRequest},
			{Name: "renew", Args: "NAME", Summary: "force a renewal now, or retry a failed order (token)", Run: certsRenew},
			{Name: "delete", Args: "NAME", Summary: "stop managing a requested/imported certificate and remove it (token)", Run: certsDelete},
			{Name: "import", Args: "-cert FILE -key FILE", Summary: "store an existing certificate and key; served, not renewed (token)", Run: certsImport},
			{Name: "root", Args: "[-issuer NAME]", Summary: "print an issuer's root certificate (PEM) to trust", Run: certsRoot},
		},
	}
}

// certRecord is the part of certd's record edgectl prints in tables.
type certRecord struct {
	Name        string     `json:"name"`
	State       string     `json:"state"`
	Source      string     `json:"source"`
	Issuer      string     `json:"issuer"`
	Serial      string     `json:"serial"`
	NotAfter    *time.Time `json:"not_after"`
	NextAttempt *time.Time `json:"next_attempt"`
	LastError   string     `json:"last_error"`
}

func certPath(name string) string { return "/v1/certificates/" + url.PathEscape(name) }

func certsList(c *Context, fs *flag.FlagSet, args []string) error {
	if _, err := c.Parse(fs, args); err != nil {
		return err
	}
	if c.JSON {
		var raw []map[string]any
		if err := c.Client().Do(c.Ctx, http.MethodGet, "/v1/certificates", nil, &raw); err != nil {
			return err
		}
		return c.Print(raw)
	}
	var recs []certRecord
	if err := c.Client().Do(c.Ctx, http.MethodGet, "/v1/certificates", nil, &recs); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tSOURCE\tISSUER\tNOT AFTER\tNEXT ATTEMPT\tLAST ERROR")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.State, r.Source, dash(r.Issuer), when(r.NotAfter), when(r.NextAttempt), dash(short(r.LastError, 80)))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func when(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func short(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func oneName(c *Context, fs *flag.FlagSet, args []string) (string, error) {
	pos, err := c.Parse(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", Usagef("give exactly one NAME")
	}
	return pos[0], nil
}

func certsShow(c *Context, fs *flag.FlagSet, args []string) error {
	name, err := oneName(c, fs, args)
	if err != nil {
		return err
	}
	var rec map[string]any
	if err := c.Client().Do(c.Ctx, http.MethodGet, certPath(name), nil, &rec); err != nil {
		return err
	}
	return c.Print(rec)
}

func certsRequest(c *Context, fs *flag.FlagSet, args []string) error {
	keyType := fs.String("key-type", "", "`type` p256 (default), p384 or rsa2048")
	issuers := fs.String("issuers", "", "comma-separated issuer `names` in order of preference (default: certd's default_issuers)")
	challenge := fs.String("challenge", "", "`type` http-01 (default), tls-alpn-01 or dns-01 (wildcards need dns-01)")
	names, err := c.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return Usagef("give at least one NAME")
	}
	body := map[string]any{"names": names}
	if *keyType != "" {
		body["key_type"] = *keyType
	}
	if *challenge != "" {
		body["challenge"] = *challenge
	}
	if *issuers != "" {
		var list []string
		for _, s := range strings.Split(*issuers, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
		body["issuers"] = list
	}
	var recs []certRecord
	if err := c.Client().Do(c.Ctx, http.MethodPost, "/v1/certificates", body, &recs); err != nil {
		return err
	}
	if c.JSON {
		return c.Print(recs)
	}
	for _, r := range recs {
		fmt.Fprintf(c.Out, "%s\t%s\n", r.Name, r.State)
	}
	return nil
}

func certsRenew(c *Context, fs *flag.FlagSet, args []string) error {
	name, err := oneName(c, fs, args)
	if err != nil {
		return err
	}
	if err := c.Client().Do(c.Ctx, http.MethodPost, certPath(name)+"/renew", nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(c.Out, "%s\trenewal started (see: edgectl certs show %s)\n", name, name)
	return nil
}

func certsDelete(c *Context, fs *flag.FlagSet, args []string) error {
	name, err := oneName(c, fs, args)
	if err != nil {
		return err
	}
	if err := c.Client().Do(c.Ctx, http.MethodDelete, certPath(name), nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(c.Out, "%s\tdeleted\n", name)
	return nil
}

func certsImport(c *Context, fs *flag.FlagSet, args []string) error {
	certFile := fs.String("cert", "", "PEM certificate chain `file` (leaf first)")
	keyFile := fs.String("key", "", "PEM private key `file`")
	if _, err := c.Parse(fs, args); err != nil {
		return err
	}
	if *certFile == "" || *keyFile == "" {
		return Usagef("give -cert and -key")
	}
	crt, err := os.ReadFile(*certFile)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	var rec certRecord
	if err := c.Client().Do(c.Ctx, http.MethodPost, "/v1/certificates/import", map[string]string{"certificate": string(crt), "private_key": string(key)}, &rec); err != nil {
		return err
	}
	if c.JSON {
		return c.Print(rec)
	}
	fmt.Fprintf(c.Out, "%s\t%s\tnot after %s\n", rec.Name, rec.State, when(rec.NotAfter))
	return nil
}

func certsRoot(c *Context, fs *flag.FlagSet, args []string) error {
	issuer := fs.String("issuer", "", "issuer `name`: a local_ca, or an ACME CA with a root_url (default: the first local_ca)")
	if _, err := c.Parse(fs, args); err != nil {
		return err
	}
	path := "/v1/localca/root"
	if *issuer != "" {
		path = "/v1/issuers/" + url.PathEscape(*issuer) + "/root"
	}
	var pemBytes []byte
	if err := c.Client().Do(c.Ctx, http.MethodGet, path, nil, &pemBytes); err != nil {
		return err
	}
	_, err := c.Out.Write(pemBytes)
	return err
}
