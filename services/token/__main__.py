from services.token.app import main

main()
