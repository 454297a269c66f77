//go:build race

package clienthello

const raceEnabled = true
