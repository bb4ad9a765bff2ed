// Ping-pong client: N round trips of 32 bytes over a unix socket, prints microseconds per trip.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
int main(int argc,char**argv){int fd=socket(AF_UNIX,SOCK_STREAM,0);struct sockaddr_un a={.sun_family=AF_UNIX};strcpy(a.sun_path,argv[1]);
if(connect(fd,(void*)&a,sizeof a)){perror("connect");return 1;}int n=atoi(argv[2]);char b[64];struct timespec t0,t1;clock_gettime(CLOCK_MONOTONIC,&t0);
for(int i=0;i<n;i++){if(write(fd,b,32)!=32)return 2;int g=0;while(g<32){int r=read(fd,b+g,32-g);if(r<=0)return 3;g+=r;}}
clock_gettime(CLOCK_MONOTONIC,&t1);double us=((t1.tv_sec-t0.tv_sec)*1e9+(t1.tv_nsec-t0.tv_nsec))/1e3/n;printf("%.1f us per round trip\n",us);return 0;}
