package deploy

import "testing"

// TestWindowsCmdLine: the command reaches cmd.exe as written, quotes and
// all, between the /S /C quotes that cmd.exe strips, with AutoRun off.
func TestWindowsCmdLine(t *testing.T) {
	const comspec = `C:\Windows\System32\cmd.exe`
	for _, tc := range []struct{ command, want string }{
		{`net stop nginx`, `"C:\Windows\System32\cmd.exe" /D /S /C "net stop nginx"`},
		{`"C:\Program Files\nginx\nginx.exe" -s reload`, `"C:\Windows\System32\cmd.exe" /D /S /C ""C:\Program Files\nginx\nginx.exe" -s reload"`},
		{`copy "%TLSALPN_CERT%" C:\certs && echo "done"`, `"C:\Windows\System32\cmd.exe" /D /S /C "copy "%TLSALPN_CERT%" C:\certs && echo "done""`},
	} {
		if got := windowsCmdLine(comspec, tc.command); got != tc.want {
			t.Errorf("windowsCmdLine(%q)\n got %s\nwant %s", tc.command, got, tc.want)
		}
	}
}
