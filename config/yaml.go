package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// This file reads the YAML document as a tree, knowing nothing of the
// configuration's keys: it answers "is this one YAML document at all" with
// the words a user needs for the usual reasons it is not (a tab, TOML, a
// binary file), which the YAML library's own messages do not give; it
// follows anchors, aliases and tags within bounds; and it says where a node
// is and what it holds, for messages.

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
	var f *ast.File
	err := safely(func() (err error) {
		f, err = parser.ParseBytes(data, 0)
		return err
	})
	if err != nil {
		d.syntaxError(data, err)
		return nil, false
	}
	var body ast.Node
	for _, doc := range f.Docs {
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
		body = doc.Body
	}
	if body == nil {
		d.add(pos{1, 1}, "the file is empty: write at least routes: or certificates: (see the example configurations)")
		return nil, false
	}
	return body, true
}

// safely runs a step of the YAML library, turning a panic in it into an
// error: a malformed file must never take the daemon down, even on a reload.
func safely(step func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the YAML library failed on this file: %v", r)
		}
	}()
	return step()
}

// yamlError is what the library's errors provide.
type yamlError interface {
	GetToken() *token.Token
	GetMessage() string
}

// libraryError maps an error of the YAML library to its place in the file.
func libraryError(err error) (pos, string) {
	var ye yamlError
	if !errors.As(err, &ye) || ye.GetToken() == nil {
		return pos{1, 1}, err.Error()
	}
	return tokenPos(ye.GetToken()), ye.GetMessage()
}

var dupKeyRE = regexp.MustCompile(`^mapping key "(.*)" already defined at \[(\d+):(\d+)\]$`)

func (d *decoder) syntaxError(data []byte, err error) {
	p, msg := libraryError(err)
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

// maxNodes bounds the nodes the decoder visits, aliases included, so that
// a file reusing anchors in every entry cannot make it work for long.
const maxNodes = 100000

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
			d.anchors[tokenValue(v.Name)] = v.Value
			n = v.Value
		case *ast.AliasNode:
			name := tokenValue(v.Value)
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
				if _, isStr := v.Value.(*ast.StringNode); !isStr && v.Value.GetToken() != nil {
					if _, ok := v.Value.(ast.ScalarNode); ok {
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

// tokenValue is the text of n's token, or "" when there is none.
func tokenValue(n ast.Node) string {
	if n == nil || reflect.ValueOf(n).IsNil() || n.GetToken() == nil {
		return ""
	}
	return n.GetToken().Value
}

// anchorCollector records the anchors in a subtree the walk skips.
type anchorCollector struct{ d *decoder }

func (a anchorCollector) Visit(n ast.Node) ast.Visitor {
	if v, ok := n.(*ast.AnchorNode); ok {
		a.d.anchors[tokenValue(v.Name)] = v.Value
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
