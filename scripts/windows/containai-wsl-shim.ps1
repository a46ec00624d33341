# ContainAI launcher shim for Windows: runs the launcher of the same name inside WSL 2.
#
# setup-local-dev.sh puts a copy of this file beside every launcher (run-claude.ps1, run-claude-dev.ps1,
# launch-agent.ps1, ...); the copy's own file name says which launcher to run. The current directory is
# handed to WSL, so `run-claude-dev.ps1` in C:\src\app works on /mnt/c/src/app.
#
# PowerShell parses arguments itself; put --% before GNU-style options so they reach the launcher as
# typed:   .\run-claude.ps1 --% --prompt "fix the tests" --no-push
$ErrorActionPreference = 'Stop'
$launcher = [System.IO.Path]::GetFileNameWithoutExtension($MyInvocation.MyCommand.Name)
if (-not (Get-Command wsl.exe -ErrorAction SilentlyContinue)) {
    Write-Error "ContainAI runs inside WSL 2: install it with 'wsl --install', then run scripts/setup-local-dev.sh inside it."
    exit 125
}
& wsl.exe --cd "$((Get-Location).Path)" -- bash -lc '"$0" "$@"' $launcher @args
exit $LASTEXITCODE
