package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// The decoder walks the YAML syntax tree itself instead of unmarshalling
// into tagged structs: that way every unknown key, wrong type and later
// validation error can name its own line and column and say what to write
// instead, which reflection-based decoding reports only in its own words.

// The keys of each mapping, in the order the documentation gives them.
var (
	topKeys     = []string{"listen", "storage", "acme", "proxy", "routes", "certificates"}
	acmeKeys    = []string{"ca", "email", "agree_tos", "ca_root", "eab", "key_type", "profile", "preferred_chain"}
	eabKeys     = []string{"kid", "hmac_key"}
	proxyKeys   = []string{"client_hello_timeout", "idle_timeout", "dial_timeout", "max_connections", "max_hello_waits_per_source", "drain_timeout", "trusted_proxies", "steer"}
	routeKeys   = []string{"names", "backend", "mode", "send_proxy"}
	certKeys    = []string{"names", "out", "deploy_hook", "hook_timeout", "haproxy", "key_type", "profile"}
	haproxyKeys = []string{"socket", "cert"}
	storageKeys = []string{"location", "etcd_ca", "etcd_cert", "etcd_key", "etcd_user", "etcd_password_file", "encryption_key_file"}
)

// sections says where each key belongs, to answer a key written at the
// wrong level ("email" at the top) with where to move it.
var sections = []struct {
	where string
	keys  []string
}{
	{"the top level", topKeys},
	{"storage:", storageKeys},
	{"acme:", acmeKeys},
	{"acme: eab:", eabKeys},
	{"proxy:", proxyKeys},
	{"each route under routes:", routeKeys},
	{"each certificate under certificates:", certKeys},
	{"a certificate's haproxy:", haproxyKeys},
}

// maxNodes bounds the nodes the decoder visits, aliases included, so that
// a file reusing anchors in every entry cannot make it work for long.
const maxNodes = 100000

type decoder struct {
	errorSink
	pos     map[string]pos
	anchors map[string]ast.Node
	nodes   int
}

func decode(data []byte, filename string) (*Config, error) {
	d := &decoder{errorSink: errorSink{file: filename}, pos: map[string]pos{}, anchors: map[string]ast.Node{}}
	c := &Config{file: filename, pos: d.pos}
	body, ok := d.document(data)
	if !ok {
		return nil, d.err()
	}
	d.top(c, body)
	if err := d.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// document parses data and returns the body of its single document.
func (d *decoder) document(data []byte) (ast.Node, bool) {
	if i := bytes.IndexByte(data, 0); i >= 0 || !utf8.Valid(data) {
		if i < 0 {
			i = invalidUTF8At(data)
		}
		d.add(offsetPos(data, i), "the file is not text (it has a NUL byte or invalid UTF-8 here): write the configuration as UTF-8 YAML")
		return nil, false
	}
	// A byte order mark is harmless; some editors on Windows add one.
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	f, err := parseYAML(data)
	if err != nil {
		d.syntaxError(data, err)
		return nil, false
	}
	var body ast.Node
	for i, doc := range f.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if body != nil {
			p := nodePos(doc.Body)
			if doc.Start != nil {
				p = tokenPos(doc.Start)
			}
			d.add(p, "a second YAML document (after ---): the configuration is one document; merge it into the first")
			return nil, false
		}
		body = f.Docs[i].Body
	}
	if body == nil {
		d.add(pos{1, 1}, "the file is empty: write at least routes: or certificates: (see the example configurations)")
		return nil, false
	}
	return body, true
}

// parseYAML runs the YAML parser, turning a panic in it into an error: a
// malformed file must never take the daemon down, even on a reload.
func parseYAML(data []byte) (f *ast.File, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("the YAML parser failed on this file: %v", r)
		}
	}()
	return parser.ParseBytes(data, 0)
}

// yamlError is what the parser's errors provide.
type yamlError interface {
	GetToken() *token.Token
	GetMessage() string
}

var dupKeyRE = regexp.MustCompile(`^mapping key "(.*)" already defined at \[(\d+):(\d+)\]$`)

func (d *decoder) syntaxError(data []byte, err error) {
	var ye yamlError
	if !errors.As(err, &ye) || ye.GetToken() == nil {
		d.add(pos{1, 1}, "not valid YAML: %v", err)
		return
	}
	p := tokenPos(ye.GetToken())
	msg := ye.GetMessage()
	// Tabs are the commonest cause and the parser's words for it ("found
	// character that cannot start any token") do not say so.
	if tp, ok := indentTab(data, p.line); ok {
		d.add(tp, "a tab is used for indentation, and YAML allows only spaces: replace the tab with spaces")
		return
	}
	if m := dupKeyRE.FindStringSubmatch(msg); m != nil {
		d.add(p, "key %q is given twice in the same mapping (first at line %s): keep one", m[1], m[2])
		return
	}
	hint := tomlHint(data)
	if hint == "" && strings.HasSuffix(msg, "value is not allowed in this context") {
		hint = " (check the indentation of this line and the next: the keys of one mapping must start in the same column)"
	}
	d.add(p, "not valid YAML: %s%s", msg, hint)
}

var tomlRE = regexp.MustCompile(`(?m)^[ \t]*(\[[A-Za-z0-9_.-]+\]|[A-Za-z0-9_-]+[ \t]*=)`)

// tomlHint recognises the commonest wrong format.
func tomlHint(data []byte) string {
	if tomlRE.Match(data) {
		return " (this looks like TOML or INI; the format is YAML: write key: value)"
	}
	return ""
}

// indentTab finds the first line up to line (1-based) whose indentation
// has a tab.
func indentTab(data []byte, line int) (pos, bool) {
	for i, l := range bytes.Split(data, []byte("\n")) {
		if i >= line {
			break
		}
		for j, b := range l {
			if b == '\t' {
				return pos{i + 1, j + 1}, true
			}
			if b != ' ' {
				break
			}
		}
	}
	return pos{}, false
}

func invalidUTF8At(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return 0
}

func offsetPos(data []byte, off int) pos {
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return pos{line, col}
}

func tokenPos(tk *token.Token) pos {
	if tk == nil || tk.Position == nil {
		return pos{}
	}
	return pos{tk.Position.Line, tk.Position.Column}
}

// nodePos is where a node starts. A block mapping's own token is the colon
// after its first key; the key is where a reader looks.
func nodePos(n ast.Node) pos {
	if m, ok := n.(*ast.MappingNode); ok && !m.IsFlowStyle && len(m.Values) > 0 {
		return nodePos(m.Values[0].Key)
	}
	if n == nil {
		return pos{}
	}
	return tokenPos(n.GetToken())
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func where(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

// resolve follows anchors, aliases and tags to the node that holds the
// value. It returns nil, having reported why, for what this format does
// not accept.
func (d *decoder) resolve(n ast.Node) ast.Node {
	for range 16 {
		d.nodes++
		if d.nodes > maxNodes {
			if d.nodes == maxNodes+1 {
				d.add(nodePos(n), "the file expands to more than %d values (through aliases?): write it out plainly", maxNodes)
			}
			return nil
		}
		switch v := n.(type) {
		case *ast.AnchorNode:
			if v.Name != nil {
				d.anchors[v.Name.GetToken().Value] = v.Value
			}
			n = v.Value
		case *ast.AliasNode:
			name := ""
			if v.Value != nil {
				name = v.Value.GetToken().Value
			}
			target, ok := d.anchors[name]
			if !ok {
				d.add(nodePos(v), "alias *%s refers to no anchor &%s defined above it", name, name)
				return nil
			}
			n = target
		case *ast.TagNode:
			tag := ""
			if v.Start != nil {
				tag = v.Start.Value
			}
			switch tag {
			case "!!str":
				if s, ok := v.Value.(ast.ScalarNode); ok && v.Value.GetToken() != nil {
					if _, isStr := s.(*ast.StringNode); !isStr {
						return ast.String(v.Value.GetToken())
					}
				}
				n = v.Value
			case "!!int", "!!bool", "!!float", "!!null", "!!map", "!!seq":
				n = v.Value
			default:
				d.add(nodePos(v), "YAML tag %s is not supported here: remove it", tag)
				return nil
			}
		default:
			return n
		}
	}
	d.add(nodePos(n), "anchors and aliases nest too deeply here: write the value out")
	return nil
}

// anchorCollector records the anchors in a subtree the decoder skips.
type anchorCollector struct{ d *decoder }

func (a anchorCollector) Visit(n ast.Node) ast.Visitor {
	if v, ok := n.(*ast.AnchorNode); ok && v.Name != nil {
		a.d.anchors[v.Name.GetToken().Value] = v.Value
	}
	return a
}

// describe names a value's kind for "got ..." in messages.
func describe(n ast.Node) string {
	switch v := n.(type) {
	case nil, *ast.NullNode:
		return "nothing"
	case *ast.StringNode:
		return strconv.Quote(v.Value)
	case *ast.LiteralNode:
		return "a block of text"
	case *ast.IntegerNode, *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return "the number " + v.GetToken().Value
	case *ast.BoolNode:
		return v.GetToken().Value
	case *ast.SequenceNode:
		return "a list"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping (key: value)"
	}
	return "a " + n.Type().String()
}

// mapping walks a mapping's keys, reporting unknown ones, and calls set for
// each known one with the key's path and value. Nothing (null) is an empty
// mapping.
func (d *decoder) mapping(path string, n ast.Node, keys []string, set func(key, path string, v ast.Node)) {
	orig := n
	if n = d.resolve(n); n == nil {
		return
	}
	d.pos[path] = nodePos(orig)
	var values []*ast.MappingValueNode
	switch v := n.(type) {
	case *ast.NullNode:
		return
	case *ast.MappingNode:
		values = v.Values
	case *ast.MappingValueNode:
		values = []*ast.MappingValueNode{v}
	default:
		what := "the file must be a mapping of keys"
		if path != "" {
			what = path + ": want a mapping of keys"
		}
		hint := ""
		if s, ok := n.(*ast.StringNode); ok && path == "" {
			hint = tomlHint([]byte(s.Value))
		}
		d.add(nodePos(orig), "%s such as %s, got %s%s", what, orList(quoteKeys(keys[:min(3, len(keys))])), describe(n), hint)
		return
	}
	for _, mv := range values {
		key, kp := "", nodePos(mv.Key)
		switch k := mv.Key.(type) {
		case *ast.MergeKeyNode:
			d.add(kp, "merge keys (<<) are not supported in %s: write the keys out", where(path))
			continue
		case *ast.MappingKeyNode:
			d.add(kp, "complex keys (?) are not supported in %s: write key: value", where(path))
			continue
		case *ast.StringNode:
			key = k.Value
		default:
			if tk := mv.Key.GetToken(); tk != nil {
				key = tk.Value
			}
		}
		if path == "" && strings.HasPrefix(key, "x-") {
			// Extension keys hold anchors for reuse, as in Compose files.
			if mv.Value != nil {
				ast.Walk(anchorCollector{d}, mv.Value)
			}
			continue
		}
		if !contains(keys, key) {
			d.add(kp, "%s", unknownKey(key, path, keys))
			continue
		}
		kpath := join(path, key)
		if _, null := mv.Value.(*ast.NullNode); null || mv.Value == nil {
			// "backend:" with nothing after it: point at the key.
			d.pos[kpath] = kp
			continue
		}
		d.pos[kpath] = nodePos(mv.Value)
		set(key, kpath, mv.Value)
	}
}

func quoteKeys(keys []string) []string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = k + ":"
	}
	return q
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// unknownKey says what to write instead of key: the nearest known key at
// this level, or the level where key belongs, or the keys there are.
func unknownKey(key, path string, keys []string) string {
	msg := fmt.Sprintf("unknown key %q in %s", key, where(path))
	if near := nearest(key, keys); near != "" {
		return msg + fmt.Sprintf(": did you mean %q?", near)
	}
	var belongs []string
	for _, s := range sections {
		if contains(s.keys, key) {
			belongs = append(belongs, s.where)
		}
	}
	if len(belongs) > 0 {
		return msg + fmt.Sprintf(": %s belongs under %s", key, orList(belongs))
	}
	return msg + ": the keys here are " + strings.Join(keys, ", ")
}

// list walks a sequence, calling each for every element; a single scalar
// is taken as a list of one, so "names: example.com" works.
func (d *decoder) list(path string, n ast.Node, want string, each func(path string, v ast.Node)) {
	orig := n
	if n = d.resolve(n); n == nil {
		return
	}
	switch v := n.(type) {
	case *ast.NullNode:
	case *ast.SequenceNode:
		for i, e := range v.Values {
			ip := index(path, i)
			d.pos[ip] = nodePos(e)
			each(ip, e)
		}
	case *ast.StringNode, *ast.LiteralNode:
		ip := index(path, 0)
		d.pos[ip] = nodePos(orig)
		each(ip, n)
	default:
		d.add(nodePos(orig), "%s: want %s, got %s", path, want, describe(n))
	}
}

// str decodes a string. example, if set, shows the expected form.
func (d *decoder) str(path string, n ast.Node, example string) string {
	orig := n
	if n = d.resolve(n); n == nil {
		return ""
	}
	switch v := n.(type) {
	case *ast.NullNode:
		return ""
	case *ast.StringNode:
		return v.Value
	case *ast.LiteralNode:
		if v.Value != nil {
			return v.Value.Value
		}
		return ""
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		text := v.GetToken().Value
		if example != "" {
			d.add(nodePos(orig), "%s: want a string such as %q, got %s: put it in quotes", path, example, describe(n))
		} else {
			d.add(nodePos(orig), "%s: want a string, got %s: put it in quotes, %q", path, describe(n), text)
		}
		return ""
	}
	if example != "" {
		d.add(nodePos(orig), "%s: want a string such as %q, got %s", path, example, describe(n))
	} else {
		d.add(nodePos(orig), "%s: want a string, got %s", path, describe(n))
	}
	return ""
}

func (d *decoder) boolean(path string, n ast.Node) bool {
	orig := n
	if n = d.resolve(n); n == nil {
		return false
	}
	switch v := n.(type) {
	case *ast.NullNode:
		return false
	case *ast.BoolNode:
		return v.Value
	}
	d.add(nodePos(orig), "%s: want true or false, got %s", path, describe(n))
	return false
}

// integer decodes a whole number; want describes the acceptable values for
// the error message.
func (d *decoder) integer(path string, n ast.Node, want string) (int, bool) {
	orig := n
	if n = d.resolve(n); n == nil {
		return 0, false
	}
	switch v := n.(type) {
	case *ast.NullNode:
		return 0, true
	case *ast.IntegerNode:
		switch i := v.Value.(type) {
		case int64:
			if i >= math.MinInt32 && i <= math.MaxInt32 {
				return int(i), true
			}
		case uint64:
			if i <= math.MaxInt32 {
				return int(i), true
			}
		}
		d.add(nodePos(orig), "%s: want %s, got %s, which is out of range", path, want, describe(n))
		return 0, false
	}
	hint := ""
	if s, ok := n.(*ast.StringNode); ok {
		if _, err := strconv.Atoi(strings.TrimSpace(s.Value)); err == nil {
			hint = ": write the number without quotes"
		}
	}
	d.add(nodePos(orig), "%s: want %s, got %s%s", path, want, describe(n), hint)
	return 0, false
}

func (d *decoder) duration(path string, n ast.Node) Duration {
	orig := n
	if n = d.resolve(n); n == nil {
		return 0
	}
	switch v := n.(type) {
	case *ast.NullNode:
		return 0
	case *ast.StringNode:
		dur, err := ParseDuration(v.Value)
		if err != nil {
			d.add(nodePos(orig), "%s: %v", path, err)
		}
		return dur
	case *ast.IntegerNode:
		if v.GetToken().Value == "0" {
			return 0
		}
		d.add(nodePos(orig), "%s: want a duration with a unit such as \"30s\" or \"10m\", got %s: write \"%ss\" for seconds", path, describe(n), v.GetToken().Value)
		return 0
	}
	d.add(nodePos(orig), "%s: want a duration such as \"30s\", \"10m\" or \"7d\", got %s", path, describe(n))
	return 0
}

func (d *decoder) strings(path string, n ast.Node, example string) []string {
	var out []string
	d.list(path, n, fmt.Sprintf("a list such as [%s]", example), func(ip string, v ast.Node) {
		out = append(out, d.str(ip, v, ""))
	})
	return out
}

func (d *decoder) top(c *Config, body ast.Node) {
	d.mapping("", body, topKeys, func(key, path string, v ast.Node) {
		switch key {
		case "listen":
			c.Listen = d.str(path, v, ":443")
		case "storage":
			d.storage(&c.Storage, path, v)
		case "acme":
			d.acme(&c.ACME, path, v)
		case "proxy":
			d.proxy(&c.Proxy, path, v)
		case "routes":
			d.list(path, v, "a list of routes, each starting with \"- names:\"", func(ip string, e ast.Node) {
				c.Routes = append(c.Routes, d.route(ip, e))
			})
		case "certificates":
			d.list(path, v, "a list of certificates, each starting with \"- names:\"", func(ip string, e ast.Node) {
				c.Certificates = append(c.Certificates, d.certificate(ip, e))
			})
		}
	})
}

// storage decodes a plain location (storage: /var/lib/tlsalpn) or a
// mapping of storageKeys.
func (d *decoder) storage(s *Storage, path string, n ast.Node) {
	if r := d.resolve(n); r != nil {
		switch r.(type) {
		case *ast.MappingNode, *ast.MappingValueNode:
		default:
			s.Location = d.str(path, n, "/var/lib/tlsalpn")
			return
		}
	}
	d.mapping(path, n, storageKeys, func(key, path string, v ast.Node) {
		switch key {
		case "location":
			s.Location = d.str(path, v, "etcd://10.0.0.1:2379/tlsalpn")
		case "etcd_ca":
			s.EtcdCA = d.str(path, v, "/etc/tlsalpn/etcd-ca.pem")
		case "etcd_cert":
			s.EtcdCert = d.str(path, v, "/etc/tlsalpn/etcd-client.pem")
		case "etcd_key":
			s.EtcdKey = d.str(path, v, "/etc/tlsalpn/etcd-client-key.pem")
		case "etcd_user":
			s.EtcdUser = d.str(path, v, "tlsalpn")
		case "etcd_password_file":
			s.EtcdPasswordFile = d.str(path, v, "/etc/tlsalpn/etcd-password")
		case "encryption_key_file":
			s.EncryptionKeyFile = d.str(path, v, "/etc/tlsalpn/storage.key")
		}
	})
}

func (d *decoder) acme(a *ACME, path string, n ast.Node) {
	d.mapping(path, n, acmeKeys, func(key, path string, v ast.Node) {
		switch key {
		case "ca":
			a.CA = d.str(path, v, "letsencrypt")
		case "email":
			a.Email = d.str(path, v, "ops@example.com")
		case "agree_tos":
			a.AgreeTOS = d.boolean(path, v)
		case "ca_root":
			a.CARoot = d.str(path, v, "/etc/tlsalpn/ca-root.pem")
		case "eab":
			e := &EAB{}
			d.mapping(path, v, eabKeys, func(key, path string, v ast.Node) {
				switch key {
				case "kid":
					e.KID = d.str(path, v, "")
				case "hmac_key":
					e.HMACKey = d.str(path, v, "")
				}
			})
			if *e != (EAB{}) {
				a.EAB = e
			} else if r := d.resolve(v); r != nil {
				if _, null := r.(*ast.NullNode); !null {
					a.EAB = e // "eab: {}" is half given too
				}
			}
		case "key_type":
			a.KeyType = d.str(path, v, "ec256")
		case "profile":
			a.Profile = d.str(path, v, "")
		case "preferred_chain":
			a.PreferredChain = d.str(path, v, "")
		}
	})
}

func (d *decoder) proxy(p *Proxy, path string, n ast.Node) {
	d.mapping(path, n, proxyKeys, func(key, path string, v ast.Node) {
		switch key {
		case "client_hello_timeout":
			p.ClientHelloTimeout = d.duration(path, v)
		case "idle_timeout":
			p.IdleTimeout = d.duration(path, v)
		case "dial_timeout":
			p.DialTimeout = d.duration(path, v)
		case "drain_timeout":
			p.DrainTimeout = d.duration(path, v)
		case "max_connections":
			p.MaxConnections, _ = d.integer(path, v, "a number of connections such as 8000")
		case "max_hello_waits_per_source":
			p.MaxHelloWaitsPerSource, _ = d.integer(path, v, "a number of connections such as 128")
		case "steer":
			p.Steer = d.str(path, v, "auto")
		case "trusted_proxies":
			d.list(path, v, "a list of networks such as [10.0.0.0/8, 192.0.2.7]", func(ip string, e ast.Node) {
				s := d.str(ip, e, "10.0.0.0/8")
				if s == "" {
					return
				}
				pfx, err := parsePrefix(s)
				if err != nil {
					d.add(d.pos[ip], "%s: %v", ip, err)
					return
				}
				p.TrustedProxies = append(p.TrustedProxies, pfx)
			})
		}
	})
}

// parsePrefix reads a CIDR prefix or a bare address (a one-address prefix).
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a network: write a CIDR prefix such as 10.0.0.0/8 or 2001:db8::/32, or one address", s)
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q has a zone: leave out the %%zone", s)
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, fmt.Errorf("%q has bits set past the /%d prefix: did you mean %s?", s, p.Bits(), m)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or network: write an address such as 192.0.2.7 or a CIDR prefix such as 10.0.0.0/8", s)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q has a zone: leave out the %%zone", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (d *decoder) route(path string, n ast.Node) Route {
	var r Route
	d.mapping(path, n, routeKeys, func(key, path string, v ast.Node) {
		switch key {
		case "names":
			r.Names = d.strings(path, v, "example.com, \"*.example.com\"")
		case "backend":
			r.Backend = d.str(path, v, "127.0.0.1:8443")
		case "mode":
			r.Mode = d.str(path, v, "passthrough")
		case "send_proxy":
			sp, ok := d.integer(path, v, "0, 1 or 2")
			if ok && (sp < 0 || sp > 2) {
				d.add(d.pos[path], "%s: want 0, 1 or 2, got %d", path, sp)
			}
			r.SendProxy = sp
		}
	})
	return r
}

func (d *decoder) certificate(path string, n ast.Node) Certificate {
	var c Certificate
	d.mapping(path, n, certKeys, func(key, path string, v ast.Node) {
		switch key {
		case "names":
			c.Names = d.strings(path, v, "example.com, www.example.com")
		case "out":
			c.Out = d.str(path, v, "/etc/nginx/tls/example.com")
		case "deploy_hook":
			c.DeployHook = d.str(path, v, "systemctl reload nginx")
		case "hook_timeout":
			c.HookTimeout = d.duration(path, v)
		case "haproxy":
			h := &HAProxy{}
			d.mapping(path, v, haproxyKeys, func(key, path string, v ast.Node) {
				switch key {
				case "socket":
					h.Socket = d.str(path, v, "/run/haproxy/admin.sock")
				case "cert":
					h.Cert = d.str(path, v, "/etc/haproxy/certs/example.com.pem")
				}
			})
			c.HAProxy = h
		case "key_type":
			c.KeyType = d.str(path, v, "ec256")
		case "profile":
			c.Profile = d.str(path, v, "")
		}
	})
	return c
}
