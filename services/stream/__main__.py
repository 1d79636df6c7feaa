from services.stream.app import main

main()
