module tickrun.dev/pause

go 1.22
