from trainledger.cli.main import main

main()
