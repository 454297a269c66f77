package sdnotify

import (
	"net"
	"strconv"
	"testing"
	"time"
)

func TestWatchdogInterval(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		err       bool
	}{
		{"", "", 0, false},
		{"30000000", "", 15 * time.Second, false},
		{"30000000", "42", 15 * time.Second, false},
		{"30000000", "43", 0, false}, // another process's watchdog
		{"0", "", 0, true},
		{"soon", "", 0, true},
		{"-5", "", 0, true},
	} {
		got, err := WatchdogInterval(tc.usec, tc.pid, 42)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("WatchdogInterval(%q, %q) = %v, %v; want %v, error %v", tc.usec, tc.pid, got, err, tc.want, tc.err)
		}
	}
}

// TestNotifyAbstract: an abstract socket (NOTIFY_SOCKET=@name, what
// systemd uses in containers) gets the states as one datagram.
func TestNotifyAbstract(t *testing.T) {
	name := "@tlsalpn-sdnotify-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n, err := New(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Notify("READY=1", "STATUS=up"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	k, _, err := c.ReadFromUnix(buf)
	if err != nil || string(buf[:k]) != "READY=1\nSTATUS=up\n" {
		t.Errorf("received %q, %v", buf[:k], err)
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		socket string
		nil    bool
		err    bool
	}{
		{"", true, false},
		{"/run/systemd/notify", false, false},
		{"@abstract", false, false},
		{"vsock:2:1234", true, true},
		{"relative/path", true, true},
	} {
		n, err := New(tc.socket)
		if (n == nil) != tc.nil || (err != nil) != tc.err {
			t.Errorf("New(%q) = %v, %v", tc.socket, n, err)
		}
	}
	// A nil Notifier (no service manager) sends nothing and fails nothing.
	var n *Notifier
	if err := n.Notify("READY=1"); err != nil {
		t.Errorf("nil Notifier: %v", err)
	}
}
