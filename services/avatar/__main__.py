from services.avatar.app import main

main()
