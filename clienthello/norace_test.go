//go:build !race

package clienthello

const raceEnabled = false
