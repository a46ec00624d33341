from containai.cli.main import main

main()
