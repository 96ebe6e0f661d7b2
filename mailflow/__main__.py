from mailflow.cli.main import main

main()
