package config

import (
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
)

// Decoding is two steps. The first walks the syntax tree against the Go
// types, guided by their yaml tags: it finds every unknown key and value of
// the wrong kind in one pass and words each at its line and column, saying
// what to write instead (the library stops at the first and speaks of Go
// types), and records where each value is so that Validate can point at
// it. The second, once the file fits, is the YAML library decoding the
// same tree into the structs.

// sections says where each key belongs, to answer a key written at the
// wrong level ("email" at the top) with where to move it.
var sections = []struct {
	where string
	t     reflect.Type
}{
	{"the top level", reflect.TypeFor[Config]()},
	{"storage:", reflect.TypeFor[Storage]()},
	{"acme:", reflect.TypeFor[ACME]()},
	{"acme: eab:", reflect.TypeFor[EAB]()},
	{"proxy:", reflect.TypeFor[Proxy]()},
	{"each route under routes:", reflect.TypeFor[Route]()},
	{"each certificate under certificates:", reflect.TypeFor[Certificate]()},
	{"a certificate's haproxy:", reflect.TypeFor[HAProxy]()},
}

// topKeys are the keys of the top level, in the order of the documentation.
var topKeys = keys(reflect.TypeFor[Config]())

var (
	durationType = reflect.TypeFor[Duration]()
	prefixType   = reflect.TypeFor[netip.Prefix]()
)

type decoder struct {
	errorSink
	pos     map[string]pos
	anchors map[string]ast.Node
	nodes   int
}

func decode(data []byte, filename string) (*Config, error) {
	d := &decoder{errorSink: errorSink{file: filename}, pos: map[string]pos{}, anchors: map[string]ast.Node{}}
	body, ok := d.document(data)
	if !ok {
		return nil, d.err()
	}
	d.walk("", body, reflect.TypeFor[Config](), "")
	if err := d.err(); err != nil {
		return nil, err
	}
	c := &Config{file: filename, pos: d.pos}
	err := safely(func() error {
		return yaml.NodeToValue(body, c,
			yaml.CustomUnmarshaler(oneOrMore(parsePrefix)),
			yaml.CustomUnmarshaler(plainOrMapping))
	})
	if err != nil {
		// The walk let through something the library refuses.
		p, msg := libraryError(err)
		d.add(p, "%s", msg)
		return nil, d.err()
	}
	return c, nil
}

// oneOrMore decodes a list whose values parse reads, or a single value as
// a list of one ("names: example.com").
func oneOrMore[T any](parse func(string) (T, error)) func(*[]T, []byte) error {
	return func(dst *[]T, b []byte) error {
		var list []string
		if err := yaml.Unmarshal(b, &list); err != nil {
			var one string
			if yaml.Unmarshal(b, &one) != nil {
				return err
			}
			list = []string{one}
		}
		*dst = nil
		for _, s := range list {
			v, err := parse(s)
			if err != nil {
				return err
			}
			*dst = append(*dst, v)
		}
		return nil
	}
}

// plainOrMapping decodes storage: as a location alone or as the mapping.
func plainOrMapping(s *Storage, b []byte) error {
	type mapping Storage // without this function, so the library decodes it
	if err := yaml.Unmarshal(b, (*mapping)(s)); err == nil {
		return nil
	}
	*s = Storage{}
	return yaml.Unmarshal(b, &s.Location)
}

// keys lists the keys of the mapping that decodes into t.
func keys(t reflect.Type) []string {
	var ks []string
	for f := range t.Fields() {
		if k := f.Tag.Get("yaml"); k != "" {
			ks = append(ks, k)
		}
	}
	return ks
}

// walk checks the value n at path against t, the Go type it decodes into;
// tag is the struct tag of the field that holds it. Nothing (null) fits
// every type and leaves the zero value.
func (d *decoder) walk(path string, orig ast.Node, t reflect.Type, tag reflect.StructTag) {
	n := d.resolve(orig)
	if n == nil {
		return
	}
	d.pos[path] = nodePos(orig)
	if _, null := n.(*ast.NullNode); null {
		return
	}
	switch k := t.Kind(); {
	case t == durationType:
		d.duration(path, orig, n)
	case t == prefixType:
		if s, ok := d.str(path, orig, n, tag.Get("example")); ok {
			if _, err := parsePrefix(s); err != nil {
				d.add(nodePos(orig), "%s: %v", path, err)
			}
		}
	case k == reflect.Pointer:
		d.walk(path, orig, t.Elem(), tag)
	case k == reflect.Struct:
		d.mapping(path, orig, n, t)
	case k == reflect.Slice:
		d.list(path, orig, n, t.Elem(), tag)
	case k == reflect.String:
		d.str(path, orig, n, tag.Get("example"))
	case k == reflect.Bool:
		if _, ok := n.(*ast.BoolNode); !ok {
			d.add(nodePos(orig), "%s: want true or false, got %s", path, describe(n))
		}
	case k == reflect.Int:
		d.integer(path, orig, n, tag.Get("want"))
	default:
		panic("config: no decoding for " + t.String())
	}
}

// mapping checks a mapping's keys against the fields of t, reporting
// unknown ones, and walks each known one's value.
func (d *decoder) mapping(path string, orig, n ast.Node, t reflect.Type) {
	var values []*ast.MappingValueNode
	switch v := n.(type) {
	case *ast.MappingNode:
		values = v.Values
	case *ast.MappingValueNode:
		values = []*ast.MappingValueNode{v}
	default:
		d.notMapping(path, orig, n, t)
		return
	}
	fields := map[string]reflect.StructField{}
	for f := range t.Fields() {
		if k := f.Tag.Get("yaml"); k != "" {
			fields[k] = f
		}
	}
	for _, mv := range values {
		key, kp := tokenValue(mv.Key), nodePos(mv.Key)
		switch k := mv.Key.(type) {
		case *ast.MergeKeyNode:
			d.add(kp, "merge keys (<<) are not supported in %s: write the keys out", where(path))
			continue
		case *ast.MappingKeyNode:
			d.add(kp, "complex keys (?) are not supported in %s: write key: value", where(path))
			continue
		case *ast.StringNode:
			key = k.Value
		}
		f, known := fields[key]
		switch {
		case path == "" && strings.HasPrefix(key, "x-"):
			// Extension keys hold anchors for reuse, as in Compose files.
			if mv.Value != nil {
				ast.Walk(anchorCollector{d}, mv.Value)
			}
		case !known:
			d.add(kp, "%s", unknownKey(key, path, keys(t)))
		case mv.Value == nil || mv.Value.Type() == ast.NullType:
			// "backend:" with nothing after it: point at the key.
			d.pos[join(path, key)] = kp
		default:
			if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String {
				mv.Value = d.asList(mv.Value)
			}
			d.walk(join(path, key), mv.Value, f.Type, f.Tag)
		}
	}
}

// asList turns a single string where a list of strings belongs
// ("names: example.com") into a list of one in the tree the library
// decodes, so that lists of strings need no custom unmarshaler: the
// library formats the whole document again for each call of one, which
// made loading quadratic in the number of certificates and routes (2 s
// for 1,000 certificates, minutes for 10,000).
func (d *decoder) asList(n ast.Node) ast.Node {
	switch v := d.resolve(n).(type) {
	case *ast.StringNode, *ast.LiteralNode:
		seq := ast.Sequence(v.GetToken(), true)
		seq.Values = []ast.Node{v}
		return seq
	}
	return n
}

// notMapping reports a value where t's mapping should be, unless t has a
// field that may be written as the whole value (storage: /var/lib/tlsalpn).
func (d *decoder) notMapping(path string, orig, n ast.Node, t reflect.Type) {
	for f := range t.Fields() {
		if _, ok := f.Tag.Lookup("scalar"); ok {
			d.walk(path, orig, f.Type, f.Tag)
			return
		}
	}
	what := "the file must be a mapping of keys"
	if path != "" {
		what = path + ": want a mapping of keys"
	}
	hint := ""
	if s, ok := n.(*ast.StringNode); ok && path == "" {
		hint = tomlHint([]byte(s.Value))
	}
	ks := keys(t)
	ks = ks[:min(3, len(ks))]
	for i := range ks {
		ks[i] += ":"
	}
	d.add(nodePos(orig), "%s such as %s, got %s%s", what, orList(ks), describe(n), hint)
}

// unknownKey says what to write instead of key: the nearest known key at
// this level, or the level where key belongs, or the keys there are.
func unknownKey(key, path string, known []string) string {
	msg := fmt.Sprintf("unknown key %q in %s", key, where(path))
	if near := nearest(key, known); near != "" {
		return msg + fmt.Sprintf(": did you mean %q?", near)
	}
	var belongs []string
	for _, s := range sections {
		for _, k := range keys(s.t) {
			if k == key {
				belongs = append(belongs, s.where)
			}
		}
	}
	if len(belongs) > 0 {
		return msg + fmt.Sprintf(": %s belongs under %s", key, orList(belongs))
	}
	return msg + ": the keys here are " + strings.Join(known, ", ")
}

// list walks a sequence; a single string is taken as a list of one, so
// "names: example.com" works.
func (d *decoder) list(path string, orig, n ast.Node, elem reflect.Type, tag reflect.StructTag) {
	switch v := n.(type) {
	case *ast.SequenceNode:
		for i, e := range v.Values {
			d.walk(index(path, i), e, elem, tag)
		}
	case *ast.StringNode, *ast.LiteralNode:
		d.walk(index(path, 0), orig, elem, tag)
	default:
		d.add(nodePos(orig), "%s: want %s, got %s", path, tag.Get("want"), describe(n))
	}
}

// str checks for a string and returns it; example, if set, shows the
// expected form.
func (d *decoder) str(path string, orig, n ast.Node, example string) (string, bool) {
	switch v := n.(type) {
	case *ast.StringNode:
		return v.Value, true
	case *ast.LiteralNode:
		return tokenValue(v.Value), true
	}
	want, quote := "a string", ""
	if example != "" {
		want = fmt.Sprintf("a string such as %q", example)
	}
	switch n.(type) {
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		quote = ": put it in quotes"
		if example == "" {
			quote += fmt.Sprintf(", %q", n.GetToken().Value)
		}
	}
	d.add(nodePos(orig), "%s: want %s, got %s%s", path, want, describe(n), quote)
	return "", false
}

// integer checks for a whole number that fits in 32 bits; want describes
// the acceptable values for the error message.
func (d *decoder) integer(path string, orig, n ast.Node, want string) {
	hint := ""
	switch v := n.(type) {
	case *ast.IntegerNode:
		switch i := v.Value.(type) {
		case int64:
			if i >= math.MinInt32 && i <= math.MaxInt32 {
				return
			}
		case uint64:
			if i <= math.MaxInt32 {
				return
			}
		}
		hint = ", which is out of range"
	case *ast.StringNode:
		if _, err := strconv.Atoi(strings.TrimSpace(v.Value)); err == nil {
			hint = ": write the number without quotes"
		}
	}
	d.add(nodePos(orig), "%s: want %s, got %s%s", path, want, describe(n), hint)
}

func (d *decoder) duration(path string, orig, n ast.Node) {
	switch v := n.(type) {
	case *ast.StringNode:
		if _, err := ParseDuration(v.Value); err != nil {
			d.add(nodePos(orig), "%s: %v", path, err)
		}
	case *ast.IntegerNode:
		if v.GetToken().Value != "0" {
			d.add(nodePos(orig), "%s: want a duration with a unit such as \"30s\" or \"10m\", got %s: write \"%ss\" for seconds", path, describe(n), v.GetToken().Value)
		}
	default:
		d.add(nodePos(orig), "%s: want a duration such as \"30s\", \"10m\" or \"7d\", got %s", path, describe(n))
	}
}
