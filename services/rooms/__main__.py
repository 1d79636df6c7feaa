from services.rooms.app import main

main()
