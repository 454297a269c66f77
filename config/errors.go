package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Error is one problem in a configuration file, at the line and column of
// the offending key or value, with a message that says what to write
// instead. Line and Column are 1-based; they are 0 when the position is
// unknown (a Config built in code rather than parsed from a file).
type Error struct {
	File         string
	Line, Column int
	Msg          string
}

// Error formats the error as "file:line:col: msg", the form editors and
// terminals turn into a link; parts that are unknown are left out.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteByte(':')
	}
	if e.Line > 0 {
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteByte(':')
		if e.Column > 0 {
			b.WriteString(strconv.Itoa(e.Column))
			b.WriteByte(':')
		}
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is several problems found in one pass, in file order, so a user
// fixes them all at once rather than one per run. Parse returns an
// ErrorList only when there is more than one error, otherwise the *Error
// itself; errors.As finds the first *Error in either.
type ErrorList []*Error

// Error puts one error on each line.
func (l ErrorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap gives the errors to errors.Is and errors.As.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// maxErrors bounds how many errors one run reports; beyond it the rest are
// usually consequences of the first ones.
const maxErrors = 20

// pos is a place in the file.
type pos struct{ line, col int }

// errorSink collects errors for one file.
type errorSink struct {
	file string
	errs ErrorList
	more bool // errors beyond maxErrors were dropped
}

func (s *errorSink) add(p pos, format string, args ...any) {
	if len(s.errs) >= maxErrors {
		s.more = true
		return
	}
	s.errs = append(s.errs, &Error{File: s.file, Line: p.line, Column: p.col, Msg: fmt.Sprintf(format, args...)})
}

// err returns nil, the only *Error, or an ErrorList.
func (s *errorSink) err() error {
	switch {
	case len(s.errs) == 0:
		return nil
	case len(s.errs) == 1 && !s.more:
		return s.errs[0]
	}
	l := s.errs
	if s.more {
		last := l[len(l)-1]
		l = append(l, &Error{File: s.file, Line: last.Line, Column: last.Column,
			Msg: fmt.Sprintf("too many errors (only the first %d are shown)", maxErrors)})
	}
	return l
}

// nearest returns the candidate closest to s by edit distance, if it is
// close enough to be a plausible typo, or "".
func nearest(s string, candidates []string) string {
	best, bestD := "", -1
	ls := strings.ToLower(s)
	for _, c := range candidates {
		d := editDistance(ls, c)
		if bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	// Allow one edit in short words, up to a third of the letters in longer
	// ones ("client_helo_timout" is still client_hello_timeout).
	if bestD < 0 || bestD > max(1, max(len(s), len(best))/3) {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of neighbours ("emial")
// each count one. It counts bytes; keys are ASCII. Inputs are capped so
// hostile keys cost little.
func editDistance(a, b string) int {
	const limit = 64
	a, b = a[:min(len(a), limit)], b[:min(len(b), limit)]
	// d[i][j] is the distance between a[:i] and b[:j].
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// orList formats ["a", "b", "c"] as "a, b or c".
func orList(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

// join, index and where name a place in the file as messages do:
// "routes[0].backend", "the top level".
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
