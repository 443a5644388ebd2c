from tickrun.cli import main

main()
